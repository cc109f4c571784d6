// The manifests of this directory cannot run here: no cluster does. This
// test decodes each of them as strictly as the API server does into the
// official API types, then checks them against the goms configuration
// they ship, loaded and served by goms itself.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// shutdownMargin is what the grace period needs beyond drain_delay and
// shutdown_timeout: goms's 2s for the statuses of cancelled calls to
// flush, and the process's exit.
const shutdownMargin = 5 * time.Second

// kustomization is the part of kustomize's Kustomization that
// kustomization.yaml uses (kustomize's own types would bring kustomize
// in); strict decoding refuses any other field.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []image  `json:"images"`
}

// image is an entry of a Kustomization's images: what kustomize edit set
// image writes.
type image struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

var kustomizationKind = schema.GroupVersionKind{Group: "kustomize.config.k8s.io", Version: "v1beta1", Kind: "Kustomization"}

// manifests are the objects of this directory's *.yaml files, by name.
type manifests struct {
	deployments   map[string]*appsv1.Deployment
	services      map[string]*corev1.Service
	configMaps    map[string]*corev1.ConfigMap
	budgets       map[string]*policyv1.PodDisruptionBudget
	kustomization *kustomization
	// resourceFiles are the files with API objects: all but
	// kustomization.yaml.
	resourceFiles []string
}

var loaded = sync.OnceValues(func() (*manifests, error) {
	m := &manifests{
		deployments: make(map[string]*appsv1.Deployment),
		services:    make(map[string]*corev1.Service),
		configMaps:  make(map[string]*corev1.ConfigMap),
		budgets:     make(map[string]*policyv1.PodDisruptionBudget),
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no *.yaml file")
	}
	var errs []error
	for _, file := range files {
		if err := m.add(file); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
		}
	}
	return m, errors.Join(errs...)
})

// load returns the decoded manifests, failing the test when any of them
// does not decode.
func load(t *testing.T) *manifests {
	t.Helper()
	m, err := loaded()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// add decodes every document of a file into the type its kind names.
func (m *manifests) add(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	objects := 0
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		var typ metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &typ); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if typ == (metav1.TypeMeta{}) {
			if js, err := yaml.YAMLToJSON(doc); err == nil && string(js) == "null" {
				continue // comments only
			}
		}
		if err := m.addObject(file, typ, doc); err != nil {
			return fmt.Errorf("document %d (%s): %w", i, typ.Kind, err)
		}
		objects++
	}
	if objects == 0 {
		return errors.New("no object")
	}
	if file != "kustomization.yaml" {
		m.resourceFiles = append(m.resourceFiles, file)
	}
	return nil
}

func (m *manifests) addObject(file string, typ metav1.TypeMeta, doc []byte) error {
	var name string
	var dup bool
	switch gvk := typ.GroupVersionKind(); gvk {
	case appsv1.SchemeGroupVersion.WithKind("Deployment"):
		var d appsv1.Deployment
		if err := decodeStrict(doc, &d); err != nil {
			return err
		}
		name, dup = d.Name, m.deployments[d.Name] != nil
		m.deployments[d.Name] = &d
	case corev1.SchemeGroupVersion.WithKind("Service"):
		var s corev1.Service
		if err := decodeStrict(doc, &s); err != nil {
			return err
		}
		name, dup = s.Name, m.services[s.Name] != nil
		m.services[s.Name] = &s
	case corev1.SchemeGroupVersion.WithKind("ConfigMap"):
		var c corev1.ConfigMap
		if err := decodeStrict(doc, &c); err != nil {
			return err
		}
		name, dup = c.Name, m.configMaps[c.Name] != nil
		m.configMaps[c.Name] = &c
	case policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"):
		var b policyv1.PodDisruptionBudget
		if err := decodeStrict(doc, &b); err != nil {
			return err
		}
		name, dup = b.Name, m.budgets[b.Name] != nil
		m.budgets[b.Name] = &b
	case kustomizationKind:
		if file != "kustomization.yaml" || m.kustomization != nil {
			return errors.New("a Kustomization belongs alone in kustomization.yaml")
		}
		var k kustomization
		if err := decodeStrict(doc, &k); err != nil {
			return err
		}
		m.kustomization = &k
		return nil
	default:
		return fmt.Errorf("unknown kind %q of %q: the test decodes Deployment, Service, ConfigMap and PodDisruptionBudget", gvk.Kind, typ.APIVersion)
	}
	if name == "" {
		return errors.New("metadata.name is empty")
	}
	if dup {
		return fmt.Errorf("%s %q is defined twice", typ.Kind, name)
	}
	return nil
}

// decodeStrict decodes one YAML document as the API server does with
// fieldValidation=Strict: an unknown field, a field given twice or a key
// in the wrong case is an error (sigs.k8s.io/yaml.UnmarshalStrict goes
// through encoding/json, which matches keys in any case).
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// component is a Deployment with the goms configuration it runs.
type component struct {
	name      string
	deploy    *appsv1.Deployment
	container corev1.Container
	// configMap and configKey hold the file that -config names.
	configMap *corev1.ConfigMap
	configKey string
	config    goms.Config
}

// component resolves the -config argument of a Deployment's container to
// the ConfigMap key mounted there and loads it as the binary does, with
// the environment the kubelet gives the container.
func (m *manifests) component(t *testing.T, name string) *component {
	t.Helper()
	d := m.deployments[name]
	if d == nil {
		t.Fatalf("no Deployment %q", name)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("Deployment %q has %d containers, want 1", name, len(spec.Containers))
	}
	c := &component{name: name, deploy: d, container: spec.Containers[0]}
	path, err := configArg(c.container.Args)
	if err != nil {
		t.Fatalf("Deployment %q: args %q: %v", name, c.container.Args, err)
	}
	c.configMap, c.configKey = m.configMapAt(t, d, path)
	file := filepath.Join(t.TempDir(), c.configKey)
	if err := os.WriteFile(file, []byte(c.configMap.Data[c.configKey]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(nil, file, m.containerEnv(t, d))
	if err != nil {
		t.Fatalf("Deployment %q: ConfigMap %q key %q: %v", name, c.configMap.Name, c.configKey, err)
	}
	c.config = cfg
	return c
}

// envMu serializes the loads of loadConfig: goms.LoadConfig reads the
// GOMS_* variables of the process, which loadConfig sets for the time of a
// load, and the tests that load run in parallel.
var envMu sync.Mutex

// loadConfig is goms.LoadConfig with env (as os.Environ returns it) in the
// process's environment for the time of the load.
func loadConfig(defaults []byte, path string, env []string) (goms.Config, error) {
	envMu.Lock()
	defer envMu.Unlock()
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if old, ok := os.LookupEnv(name); ok {
			defer os.Setenv(name, old)
		} else {
			defer os.Unsetenv(name)
		}
		if err := os.Setenv(name, value); err != nil {
			return goms.Config{}, err
		}
	}
	return goms.LoadConfig(defaults, path)
}

// configArg returns the file the -config flag names.
func configArg(args []string) (string, error) {
	for i, a := range args {
		switch {
		case a == "-config" || a == "--config":
			if i+1 == len(args) {
				return "", errors.New("-config has no value")
			}
			return args[i+1], nil
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			_, v, _ := strings.Cut(a, "=")
			return v, nil
		}
	}
	return "", errors.New("no -config flag")
}

// configMapAt returns the ConfigMap and key that the container sees at
// path.
func (m *manifests) configMapAt(t *testing.T, d *appsv1.Deployment, path string) (*corev1.ConfigMap, string) {
	t.Helper()
	spec := d.Spec.Template.Spec
	for _, vm := range spec.Containers[0].VolumeMounts {
		key, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok || strings.Contains(key, "/") {
			continue
		}
		if vm.SubPath != "" {
			t.Fatalf("Deployment %q: %s is mounted with subPath, which never sees the ConfigMap change", d.Name, path)
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 || spec.Volumes[i].ConfigMap == nil {
			t.Fatalf("Deployment %q: volume %q of %s is not a ConfigMap", d.Name, vm.Name, path)
		}
		src := spec.Volumes[i].ConfigMap
		if src.Optional != nil && *src.Optional {
			t.Errorf("Deployment %q: ConfigMap volume %q is optional; without it the process cannot start", d.Name, vm.Name)
		}
		for _, item := range src.Items {
			if item.Path == key {
				key = item.Key
			}
		}
		cm := m.configMaps[src.Name]
		if cm == nil {
			t.Fatalf("Deployment %q: -config %s: no ConfigMap %q in the manifests", d.Name, path, src.Name)
		}
		if _, ok := cm.Data[key]; !ok {
			t.Fatalf("Deployment %q: -config %s: ConfigMap %q has no key %q (has %v)", d.Name, path, cm.Name, key, slices.Sorted(maps.Keys(cm.Data)))
		}
		return cm, key
	}
	t.Fatalf("Deployment %q: -config %s: no volume is mounted there", d.Name, path)
	return nil, ""
}

// containerEnv is the environment of a Deployment's container as the
// kubelet makes it, as far as the manifests tell: its env entries
// (values from Secrets and fields stand in as placeholders) and, unless
// enableServiceLinks is false, the variables of every Service with a
// cluster IP.
func (m *manifests) containerEnv(t *testing.T, d *appsv1.Deployment) []string {
	t.Helper()
	spec := d.Spec.Template.Spec
	var env []string
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		for _, name := range slices.Sorted(maps.Keys(m.services)) {
			env = append(env, serviceLinkEnv(m.services[name], "10.96.0.10")...)
		}
	}
	c := spec.Containers[0]
	if len(c.EnvFrom) > 0 {
		t.Fatalf("Deployment %q: envFrom hides the variables this test must see (GOMS_* are configuration)", d.Name)
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "placeholder"
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// serviceLinkEnv returns the Docker-link-style variables the kubelet sets
// for a Service with a cluster IP (pkg/kubelet/envvars).
func serviceLinkEnv(s *corev1.Service, ip string) []string {
	if s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
		return nil
	}
	prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	first := s.Spec.Ports[0]
	env := []string{
		prefix + "_SERVICE_HOST=" + ip,
		fmt.Sprintf("%s_SERVICE_PORT=%d", prefix, first.Port),
		fmt.Sprintf("%s_PORT=tcp://%s", prefix, net.JoinHostPort(ip, strconv.Itoa(int(first.Port)))),
	}
	for _, p := range s.Spec.Ports {
		if p.Name != "" {
			env = append(env, fmt.Sprintf("%s_SERVICE_PORT_%s=%d", prefix, strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), p.Port))
		}
		proto := strings.ToUpper(string(p.Protocol))
		if proto == "" {
			proto = "TCP"
		}
		link := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, proto)
		env = append(env,
			fmt.Sprintf("%s=%s://%s", link, strings.ToLower(proto), net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))),
			link+"_PROTO="+strings.ToLower(proto),
			fmt.Sprintf("%s_PORT=%d", link, p.Port),
			link+"_ADDR="+ip,
		)
	}
	return env
}

// listenerPorts maps each port the configuration listens on to its
// listener; the admin listener is named "admin".
func listenerPorts(t *testing.T, cfg goms.Config) map[int32]goms.Listener {
	t.Helper()
	ports := make(map[int32]goms.Listener)
	all := slices.Clone(cfg.Listeners)
	if cfg.Admin.Addr != "" {
		all = append(all, goms.Listener{Name: "admin", Addr: cfg.Admin.Addr})
	}
	for _, l := range all {
		_, p, err := net.SplitHostPort(l.Addr)
		if err != nil {
			t.Fatalf("listener %q: %v", l.Name, err)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			t.Fatalf("listener %q: address %q: a pod needs a fixed port", l.Name, l.Addr)
		}
		if prev, dup := ports[int32(n)]; dup {
			t.Fatalf("listeners %q and %q share port %d", prev.Name, l.Name, n)
		}
		ports[int32(n)] = l
	}
	return ports
}

// mountAll mounts both services on srv as examples/distributed does
// (through app.MountAll): the configuration's services and remotes choose
// which of them run.
func mountAll(srv *goms.Server) error {
	return errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(gomsv1connect.UnimplementedGoMsServiceHandler{}, srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(childv1connect.UnimplementedChildServiceHandler{}, srv.HandlerOptions()...)),
	)
}

// onLoopback returns a copy of cfg whose listeners take free loopback
// ports and whose remotes point at an address nothing listens on, so
// that a test can serve it without a cluster or DNS. It discards logs.
func onLoopback(cfg goms.Config) goms.Config {
	cfg.Listeners = slices.Clone(cfg.Listeners)
	for i := range cfg.Listeners {
		cfg.Listeners[i].Addr = "127.0.0.1:0"
	}
	if cfg.Admin.Addr != "" {
		cfg.Admin.Addr = "127.0.0.1:0"
	}
	cfg.Remotes = slices.Clone(cfg.Remotes)
	for i := range cfg.Remotes {
		cfg.Remotes[i].Targets = []string{"127.0.0.1:1"}
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

func boolValue(p *bool) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatBool(*p)
}

// goMemLimit parses a GOMEMLIMIT value: bytes, with an optional B, KiB,
// MiB, GiB or TiB suffix.
func goMemLimit(v string) (int64, error) {
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q: want bytes with an optional B, KiB, MiB, GiB or TiB suffix", v)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

func TestDeployments(t *testing.T) {
	t.Parallel()
	m := load(t)
	if len(m.deployments) == 0 {
		t.Fatal("no Deployment")
	}
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := m.component(t, name)
			d, spec, ctr := c.deploy, c.deploy.Spec.Template.Spec, c.container

			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("replicas: want at least 2, so that a stopping pod has a peer")
			}
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("selector %v does not select the template's labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
			}

			// goms accepts the configuration, and serves it with the
			// services the binary mounts.
			if _, err := goms.New(c.config); err != nil {
				t.Errorf("goms.New: %v", err)
			}
			srv, err := goms.New(onLoopback(c.config))
			if err != nil {
				t.Fatalf("goms.New on loopback: %v", err)
			}
			if err := mountAll(srv); err != nil {
				t.Fatalf("mount: %v", err)
			}
			if err := srv.Listen(); err != nil {
				t.Errorf("Listen: %v", err)
			}
			_ = srv.Close()

			// Every port goms listens on is a container port, and no
			// other is.
			ports := listenerPorts(t, c.config)
			declared := make(map[int32]bool)
			for _, p := range ctr.Ports {
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					t.Errorf("container port %q: protocol %s, want TCP", p.Name, p.Protocol)
				}
				if _, ok := ports[p.ContainerPort]; !ok {
					t.Errorf("container port %q (%d): goms listens on none such (%v)", p.Name, p.ContainerPort, slices.Sorted(maps.Keys(ports)))
				}
				if p.Name == "" {
					t.Errorf("container port %d has no name for Services to target", p.ContainerPort)
				}
				declared[p.ContainerPort] = true
			}
			for port, l := range ports {
				if !declared[port] {
					t.Errorf("listener %q (port %d) is not a container port", l.Name, port)
				}
			}

			// Probes: grpc.health.v1 on a serving listener, for the
			// whole server.
			for _, probe := range []struct {
				kind  string
				probe *corev1.Probe
			}{{"readinessProbe", ctr.ReadinessProbe}, {"livenessProbe", ctr.LivenessProbe}} {
				if probe.probe == nil || probe.probe.GRPC == nil {
					t.Errorf("%s: want a grpc probe", probe.kind)
					continue
				}
				g := probe.probe.GRPC
				l, ok := ports[g.Port]
				switch {
				case !ok:
					t.Errorf("%s: port %d: goms listens on none such (%v)", probe.kind, g.Port, slices.Sorted(maps.Keys(ports)))
				case l.Name == "admin":
					t.Errorf("%s: port %d is the admin listener's; probe the one that takes the traffic", probe.kind, g.Port)
				case l.Mode == goms.ModeHTTP:
					t.Errorf("%s: listener %q (mode http) does not serve gRPC", probe.kind, l.Name)
				}
				if g.Service != nil && *g.Service != "" {
					t.Errorf("%s: service %q; want \"\", the whole server, which goms turns NOT_SERVING at shutdown", probe.kind, *g.Service)
				}
			}

			// The grace period covers goms's own drain; a preStop hook
			// would run before SIGTERM and take from it.
			shutdown := c.config.ShutdownTimeout
			if shutdown == 0 {
				shutdown = 10 * time.Second // Config.ShutdownTimeout's default
			}
			need := c.config.DrainDelay + shutdown + shutdownMargin
			if spec.TerminationGracePeriodSeconds == nil {
				t.Errorf("terminationGracePeriodSeconds: unset, want at least %v", need)
			} else if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace < need {
				t.Errorf("terminationGracePeriodSeconds: %v, want at least drain_delay %v + shutdown_timeout %v + %v", grace, c.config.DrainDelay, shutdown, shutdownMargin)
			}
			if c.config.DrainDelay == 0 {
				t.Errorf("drain_delay: 0; endpoints take a few seconds to forget a stopping pod")
			}
			if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil {
				t.Errorf("preStop: goms drains itself on SIGTERM (drain_delay); a preStop hook takes from the grace period")
			}

			// Resources.
			req, lim := ctr.Resources.Requests, ctr.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("resources.requests: want cpu and memory, have %v", req)
			}
			if lim.Memory().IsZero() {
				t.Errorf("resources.limits: want memory, have %v", lim)
			} else if req.Memory().Cmp(*lim.Memory()) > 0 {
				t.Errorf("memory request %v is above the limit %v", req.Memory(), lim.Memory())
			}
			for _, e := range ctr.Env {
				if e.Name != "GOMEMLIMIT" {
					continue
				}
				n, err := goMemLimit(e.Value)
				if err != nil {
					t.Error(err)
				} else if !lim.Memory().IsZero() && n >= lim.Memory().Value() {
					t.Errorf("GOMEMLIMIT %s is not below the memory limit %v", e.Value, lim.Memory())
				}
			}

			// Security.
			psc, csc := spec.SecurityContext, ctr.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			if csc == nil {
				csc = &corev1.SecurityContext{}
			}
			if (csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot) && (psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot) {
				t.Errorf("runAsNonRoot: want true")
			}
			if uid := cmpOr(csc.RunAsUser, psc.RunAsUser); uid == nil || *uid == 0 {
				t.Errorf("runAsUser: want a non-root uid (the image's 65532), so that the kubelet can check runAsNonRoot")
			}
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				t.Errorf("allowPrivilegeEscalation: %s, want false", boolValue(csc.AllowPrivilegeEscalation))
			}
			if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
				t.Errorf("readOnlyRootFilesystem: %s, want true", boolValue(csc.ReadOnlyRootFilesystem))
			}
			if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
				t.Errorf("capabilities: %v, want drop [ALL] and no add", csc.Capabilities)
			}
			if sp := cmpOr(csc.SeccompProfile, psc.SeccompProfile); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccompProfile: %v, want RuntimeDefault", sp)
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken: %s, want false: goms never calls the API server", boolValue(spec.AutomountServiceAccountToken))
			}

			// Service links would put GOMS_* variables in the
			// environment the moment a Service named goms-* has a
			// cluster IP (TestServiceLinksBreakConfig).
			if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
				t.Errorf("enableServiceLinks: %s, want false", boolValue(spec.EnableServiceLinks))
			}
		})
	}
}

// cmpOr returns the first non-nil pointer.
func cmpOr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// selected returns the Deployments whose pods a selector picks.
func (m *manifests) selected(selector map[string]string) []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		pod := m.deployments[name].Spec.Template.Labels
		if len(selector) > 0 && isSubset(selector, pod) {
			names = append(names, name)
		}
	}
	return names
}

func isSubset(sub, set map[string]string) bool {
	for k, v := range sub {
		if w, ok := set[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// containerPort resolves a Service's targetPort in a container.
func containerPort(c corev1.Container, target intstr.IntOrString, port int32) (corev1.ContainerPort, bool) {
	for _, p := range c.Ports {
		switch {
		case target.Type == intstr.String && target.StrVal != "" && p.Name == target.StrVal,
			target.Type == intstr.Int && target.IntVal != 0 && p.ContainerPort == target.IntVal,
			target.Type == intstr.Int && target.IntVal == 0 && p.ContainerPort == port: // unset: port
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

func TestServices(t *testing.T) {
	t.Parallel()
	m := load(t)
	if len(m.services) == 0 {
		t.Fatal("no Service")
	}
	for _, name := range slices.Sorted(maps.Keys(m.services)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := m.services[name]
			selected := m.selected(s.Spec.Selector)
			if len(selected) != 1 {
				t.Fatalf("selector %v selects Deployments %v, want exactly one", s.Spec.Selector, selected)
			}
			c := m.component(t, selected[0])
			ports := listenerPorts(t, c.config)
			headless := s.Spec.ClusterIP == corev1.ClusterIPNone
			if !headless && s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("type %s: these manifests expose nothing outside the cluster; add your own Ingress or LoadBalancer", s.Spec.Type)
			}
			if headless && s.Spec.PublishNotReadyAddresses {
				t.Errorf("publishNotReadyAddresses: DNS must answer with ready pods only, so that a draining pod leaves it")
			}
			if len(s.Spec.Ports) == 0 {
				t.Fatal("no port")
			}
			for _, sp := range s.Spec.Ports {
				if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
					t.Errorf("port %q: protocol %s, want TCP", sp.Name, sp.Protocol)
				}
				cp, ok := containerPort(c.container, sp.TargetPort, sp.Port)
				if !ok {
					t.Errorf("port %q: targetPort %s is no container port of Deployment %q", sp.Name, sp.TargetPort.String(), c.name)
					continue
				}
				l, ok := ports[cp.ContainerPort]
				if !ok {
					t.Errorf("port %q: container port %d: goms listens on none such", sp.Name, cp.ContainerPort)
					continue
				}
				if l.Name == "admin" {
					t.Errorf("port %q: the admin listener (metrics, pprof) is no service port", sp.Name)
				}
				// A headless Service's clients dial the pods, at the
				// port their configuration names: the Service's port.
				if headless && sp.Port != cp.ContainerPort {
					t.Errorf("port %q: %d, but clients of a headless Service dial the pods: want the listener's port %d", sp.Name, sp.Port, cp.ContainerPort)
				}
			}
		})
	}
}

// TestRemotes checks the topology: each remote of each configuration
// names a headless Service, at the port where the Deployment behind it
// runs the remote's service on a listener that speaks what the caller
// sends.
func TestRemotes(t *testing.T) {
	t.Parallel()
	m := load(t)
	tests := []struct {
		from, remote, service, to string
		exposed                   bool
	}{
		{from: "child", remote: "goms", service: gomsv1connect.GoMsServiceName, to: "goms"},
		{from: "edge", remote: "goms", service: gomsv1connect.GoMsServiceName, to: "goms", exposed: true},
		{from: "edge", remote: "child", service: childv1connect.ChildServiceName, to: "child", exposed: true},
	}
	// No remote of the manifests escapes the table.
	want := make(map[string]bool)
	for _, tt := range tests {
		want[tt.from+"/"+tt.remote] = true
	}
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		for _, r := range m.component(t, name).config.Remotes {
			if !want[name+"/"+r.Name] {
				t.Errorf("Deployment %q: remote %q is not in this test's table", name, r.Name)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.from+"/"+tt.remote, func(t *testing.T) {
			t.Parallel()
			from := m.component(t, tt.from)
			i := slices.IndexFunc(from.config.Remotes, func(r goms.Remote) bool { return r.Name == tt.remote })
			if i < 0 {
				t.Fatalf("Deployment %q's configuration has no remote %q", tt.from, tt.remote)
			}
			r := from.config.Remotes[i]
			if r.Service != tt.service {
				t.Errorf("service %s, want %s", r.Service, tt.service)
			}
			if exposed := len(r.Expose) > 0; exposed != tt.exposed {
				t.Errorf("expose %v, want exposed %v", r.Expose, tt.exposed)
			}
			if len(r.Targets) == 0 {
				t.Fatal("no target")
			}
			to := m.component(t, tt.to)
			if len(to.config.Services) > 0 && !slices.Contains(to.config.Services, r.Service) {
				t.Errorf("Deployment %q runs %v, not %s", tt.to, to.config.Services, r.Service)
			}
			ports := listenerPorts(t, to.config)
			for _, target := range r.Targets {
				host, port, err := net.SplitHostPort(strings.TrimPrefix(target, "dns:///"))
				if err != nil {
					t.Fatalf("target %q: %v", target, err)
				}
				svcName, err := serviceOfHost(host)
				if err != nil {
					t.Fatalf("target %q: %v", target, err)
				}
				s := m.services[svcName]
				if s == nil {
					t.Fatalf("target %q: no Service %q", target, svcName)
				}
				if s.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("target %q: Service %q has a cluster IP; goms balances over the pods' addresses, which only a headless Service's DNS gives", target, svcName)
				}
				if got := m.selected(s.Spec.Selector); !slices.Equal(got, []string{tt.to}) {
					t.Errorf("target %q: Service %q selects %v, want [%s]", target, svcName, got, tt.to)
				}
				n, _ := strconv.ParseInt(port, 10, 32)
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(n) }) {
					t.Errorf("target %q: Service %q has no port %s", target, svcName, port)
				}
				l, ok := ports[int32(n)]
				switch {
				case !ok:
					t.Errorf("target %q: Deployment %q listens on no port %s", target, tt.to, port)
				case l.Name == "admin":
					t.Errorf("target %q: port %s is Deployment %q's admin listener", target, port, tt.to)
				case tt.exposed && l.Mode != goms.ModeGateway && l.Mode != "":
					t.Errorf("target %q: listener %q has mode %s; an edge forwards every protocol, which gateway mode takes", target, l.Name, l.Mode)
				case l.Mode == goms.ModeHTTP:
					t.Errorf("target %q: listener %q has mode http; remote calls are gRPC", target, l.Name)
				}
			}
		})
	}
}

// serviceOfHost returns the Service a host name of the cluster's DNS
// names: "svc", "svc.ns", "svc.ns.svc" or "svc.ns.svc.cluster.local".
func serviceOfHost(host string) (string, error) {
	if net.ParseIP(host) != nil {
		return "", errors.New("an IP address; name the headless Service")
	}
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	switch {
	case len(parts) <= 2,
		len(parts) == 3 && parts[2] == "svc",
		len(parts) >= 4 && parts[2] == "svc":
		return parts[0], nil
	}
	return "", fmt.Errorf("%q is not a Service's DNS name", host)
}

// TestProbesAnswer serves each configuration on loopback and probes it as
// the kubelet's gRPC probe does: grpc.health.v1.Health/Check over h2c
// from grpc-go. It must answer SERVING, then NOT_SERVING from the moment
// the drain begins, while the listener still accepts connections.
func TestProbesAnswer(t *testing.T) {
	t.Parallel()
	m := load(t)
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := m.component(t, name)
			cfg := onLoopback(c.config)
			srv, err := goms.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := mountAll(srv); err != nil {
				t.Fatal(err)
			}
			if err := srv.Listen(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var serveErr error
			served := make(chan struct{})
			go func() { serveErr = srv.Serve(ctx); close(served) }()
			t.Cleanup(func() {
				cancel()
				_ = srv.Close()
				<-served
			})

			ports := listenerPorts(t, c.config)
			var clients []healthpb.HealthClient
			var services []string
			for _, probe := range []*corev1.Probe{c.container.ReadinessProbe, c.container.LivenessProbe} {
				if probe == nil || probe.GRPC == nil {
					t.Fatal("want grpc readiness and liveness probes (TestDeployments)")
				}
				l, ok := ports[probe.GRPC.Port]
				if !ok {
					t.Fatalf("probe port %d: no listener (TestDeployments)", probe.GRPC.Port)
				}
				addr := srv.Addr(l.Name)
				if addr == nil {
					t.Fatalf("listener %q has no address", l.Name)
				}
				conn, err := grpc.NewClient(addr.String(),
					grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithUserAgent("kube-probe/1.34"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
				clients = append(clients, healthpb.NewHealthClient(conn))
				services = append(services, stringValue(probe.GRPC.Service))
			}
			check := func(i int) (healthpb.HealthCheckResponse_ServingStatus, error) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				res, err := clients[i].Check(ctx, &healthpb.HealthCheckRequest{Service: services[i]})
				return res.GetStatus(), err
			}
			waitFor := func(want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) {
				t.Helper()
				for i := range clients {
					deadline := time.Now().Add(within)
					for {
						st, err := check(i)
						if err == nil && st == want {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("probe %d: %v, %v after %v; want %v", i, st, err, within, want)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
			waitFor(healthpb.HealthCheckResponse_SERVING, 5*time.Second)

			// SIGTERM: the probes see NOT_SERVING during the drain, from
			// a listener that still answers.
			cancel()
			start := time.Now()
			waitFor(healthpb.HealthCheckResponse_NOT_SERVING, c.config.DrainDelay)
			if d := time.Since(start); d >= c.config.DrainDelay {
				t.Errorf("NOT_SERVING after %v, not within drain_delay %v", d, c.config.DrainDelay)
			}
			select {
			case <-served:
				if serveErr != nil {
					t.Errorf("Serve: %v", serveErr)
				}
			case <-time.After(c.config.DrainDelay + c.config.ShutdownTimeout + shutdownMargin):
				t.Errorf("Serve did not return within the grace period")
			}
		})
	}
}

func stringValue(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestServiceLinksBreakConfig shows why every pod sets
// enableServiceLinks: false: the variables the kubelet would set for a
// Service named goms with a cluster IP start with "GOMS_", and
// goms.LoadConfig refuses them as unknown keys.
func TestServiceLinksBreakConfig(t *testing.T) {
	t.Parallel()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "goms-api"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 42101}}},
	}
	env := serviceLinkEnv(svc, "10.96.0.10")
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "GOMS_") }) {
		t.Fatalf("service links %v: none starts with %s", env, "GOMS_")
	}
	_, err := loadConfig([]byte("listeners: [{name: gateway, address: ':42101'}]"), "", env)
	if err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("LoadConfig with service links: %v, want an unknown key", err)
	}
}

// TestKustomization checks that kustomization.yaml lists every file of
// API objects and names the image every container runs.
func TestKustomization(t *testing.T) {
	t.Parallel()
	m := load(t)
	k := m.kustomization
	if k == nil {
		t.Fatal("no kustomization.yaml")
	}
	if got, want := slices.Sorted(slices.Values(k.Resources)), slices.Sorted(slices.Values(m.resourceFiles)); !slices.Equal(got, want) {
		t.Errorf("resources %v, want the files of API objects %v", got, want)
	}
	for _, deploy := range slices.Sorted(maps.Keys(m.deployments)) {
		for _, c := range m.deployments[deploy].Spec.Template.Spec.Containers {
			name, _, _ := strings.Cut(c.Image, ":")
			if !slices.ContainsFunc(k.Images, func(i image) bool { return i.Name == name }) {
				t.Errorf("Deployment %q: image %s is not under images:, so kustomize edit set image misses it", deploy, name)
			}
		}
	}
}

// TestImageUser checks that the pods run as the user the image does, so
// that runAsNonRoot holds and nothing needs root.
func TestImageUser(t *testing.T) {
	t.Parallel()
	m := load(t)
	data, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var user string
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Fatalf("Dockerfile: USER %q, want a non-root uid", user)
	}
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		spec := m.deployments[name].Spec.Template.Spec
		for _, c := range spec.Containers {
			var podUID *int64
			if spec.SecurityContext != nil {
				podUID = spec.SecurityContext.RunAsUser
			}
			var ctrUID *int64
			if c.SecurityContext != nil {
				ctrUID = c.SecurityContext.RunAsUser
			}
			if got := cmpOr(ctrUID, podUID); got == nil || strconv.FormatInt(*got, 10) != uid {
				t.Errorf("Deployment %q: runAsUser %v, want the image's %s", name, got, uid)
			}
		}
	}
}
