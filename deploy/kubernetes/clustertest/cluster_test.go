// Package clustertest_test runs the manifests of deploy/kubernetes on a real
// cluster, from the host: the cluster of deploy/kubernetes/cluster, which
// `make test-k8s` brings up, applies the manifests to, and tears down. It
// reaches the edge Service at its cluster IP and the pods at theirs (the
// host routes both to the node's bridge).
//
// Without GOMS_K8S_DIR (the cluster's scratch directory, which holds
// admin.kubeconfig and bin/kubectl) every test skips: plain `go test ./...`
// starts no cluster.
package clustertest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// The manifests' settings that the timing assertions rest on.
const (
	resolveInterval = 5 * time.Second // remotes[].resolve_interval of child and edge
	dnsTTL          = 5 * time.Second // the cluster DNS's ttl (cluster/coredns.yaml)
)

// cluster is the cluster under test.
type cluster struct {
	dir, namespace string
	edge           string // the edge Service's base URL
}

func setup(t *testing.T) *cluster {
	t.Helper()
	dir := os.Getenv("GOMS_K8S_DIR")
	if dir == "" {
		t.Skip("GOMS_K8S_DIR is not set: `make test-k8s` runs this test against a cluster it starts")
	}
	c := &cluster{dir: dir, namespace: os.Getenv("GOMS_K8S_NAMESPACE")}
	if c.namespace == "" {
		c.namespace = "goms-demo"
	}
	ip := c.kubectl(t, "get", "service", "edge", "-o", "jsonpath={.spec.clusterIP}")
	port := c.kubectl(t, "get", "service", "edge", "-o", "jsonpath={.spec.ports[0].port}")
	c.edge = "http://" + ip + ":" + port
	return c
}

// kubectl runs kubectl in the namespace and returns its output; it fails
// the test on an error.
func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.tryKubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *cluster) tryKubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.dir, "bin", "kubectl"), append([]string{"-n", c.namespace}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(c.dir, "admin.kubeconfig"))
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("%w: %s", err, exit.Stderr)
		}
		return "", fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// pod is a pod as the tests see it.
type pod struct {
	Name, IP string
	Ready    bool
	Deleting bool
}

func (c *cluster) pods(t *testing.T, app string) []pod {
	t.Helper()
	out := c.kubectl(t, "get", "pods", "-l", "app.kubernetes.io/name="+app, "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct {
					Type, Status string
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get pods: %v", err)
	}
	var pods []pod
	for _, it := range list.Items {
		p := pod{Name: it.Metadata.Name, IP: it.Status.PodIP, Deleting: it.Metadata.DeletionTimestamp != nil}
		for _, cond := range it.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				p.Ready = true
			}
		}
		pods = append(pods, p)
	}
	return pods
}

// waitPods waits until app has exactly n pods, all Ready, none deleting.
func (c *cluster) waitPods(t *testing.T, app string, n int, timeout time.Duration) []pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods := c.pods(t, app)
		ready := 0
		for _, p := range pods {
			if p.Ready && !p.Deleting {
				ready++
			}
		}
		if len(pods) == n && ready == n {
			return pods
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d pods, %d ready, after %v; want %d ready", app, len(pods), ready, timeout, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// served returns the calls a pod has answered (goms_server_requests_total,
// summed over its labels), read from /metrics on its admin port.
func served(podIP string) (float64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	res, err := client.Get("http://" + podIP + ":4242/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics of %s: %s", podIP, res.Status)
	}
	var sum float64
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "goms_server_requests_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics of %s: %q: %w", podIP, line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, nil
	}
	return sum, nil
}

// TestCluster runs the scenarios in order: they share the cluster and
// change it.
func TestCluster(t *testing.T) {
	c := setup(t)
	t.Logf("edge Service at %s", c.edge)
	steps := []struct {
		name string
		run  func(*testing.T, *cluster)
	}{
		{"Ready", testReady},
		{"Protocols", testProtocols},
		{"Discovery", testDiscovery},
		{"Scale", testScale},
		{"RolloutRestart", testRolloutRestart},
		{"ForceDelete", testForceDelete},
		{"Logs", testLogs},
		{"Metrics", testMetrics},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, c) }) {
			return
		}
	}
}

// testReady: every pod turns Ready through its gRPC probes.
func testReady(t *testing.T, c *cluster) {
	for _, app := range []string{"goms", "child", "edge"} {
		probe := c.kubectl(t, "get", "deployment", app, "-o",
			"jsonpath={.spec.template.spec.containers[0].readinessProbe.grpc.port}")
		if probe == "" {
			t.Errorf("%s: no gRPC readiness probe", app)
		}
		pods := c.waitPods(t, app, 2, 2*time.Minute)
		t.Logf("%s: %d pods Ready through the gRPC probe on port %s", app, len(pods), probe)
	}
	// An edge pod is Ready once it serves, whether or not its remotes have
	// resolved to any pod yet: right after an apply, its first resolution
	// may have found no goms or child pod Ready, and it tries again within
	// a second or so. Each edge pod is asked directly: the Service would
	// keep a connection on one of them.
	start := time.Now()
	limit := resolveInterval + dnsTTL + 5*time.Second
	for _, p := range c.waitPods(t, "edge", 2, time.Minute) {
		url := "http://" + net.JoinHostPort(p.IP, "8080")
		items := gomsv1connect.NewGoMsServiceClient(http.DefaultClient, url)
		children := childv1connect.NewChildServiceClient(http.DefaultClient, url)
		for {
			_, errItems := items.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{}))
			_, errChildren := children.List(t.Context(), connect.NewRequest(&childv1.ListRequest{}))
			if errItems == nil && errChildren == nil {
				break
			}
			if time.Since(start) > limit {
				t.Fatalf("edge pod %s answers no call after %v: %v; %v", p.Name, limit, errItems, errChildren)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("both edge pods reached goms and child %v after their pods were Ready", time.Since(start).Round(100*time.Millisecond))
}

// testProtocols: Connect JSON over HTTP/1.1 (curl), gRPC through
// reflection (grpcurl) and the REST routes, all through the edge Service.
func testProtocols(t *testing.T, c *cluster) {
	// Connect, JSON, HTTP/1.1: what curl sends.
	// Names are unique per goms replica: the runs of the test differ.
	name := fmt.Sprintf("curl-%d", time.Now().UnixNano())
	body := postJSON(t, c.edge+"/goms.v1.GoMsService/Create", `{"name":"`+name+`"}`)
	var created struct {
		Item struct{ ID, Name string }
	}
	if err := json.Unmarshal(body, &created); err != nil || created.Item.Name != name || created.Item.ID == "" {
		t.Fatalf("Connect Create through the edge: %s (%v)", body, err)
	}
	t.Logf("Connect JSON (HTTP/1.1): Create answered %s", body)

	// grpcurl, through server reflection on the edge.
	host := strings.TrimPrefix(c.edge, "http://")
	list := grpcurl(t, "-plaintext", host, "list")
	for _, svc := range []string{"goms.v1.GoMsService", "child.v1.ChildService"} {
		if !slices.Contains(strings.Fields(list), svc) {
			t.Errorf("grpcurl list through the edge: %q lacks %s", list, svc)
		}
	}
	name = fmt.Sprintf("grpcurl-%d", time.Now().UnixNano())
	out := grpcurl(t, "-plaintext", "-d", `{"name":"`+name+`"}`, host, "goms.v1.GoMsService/Create")
	if !strings.Contains(out, `"`+name+`"`) {
		t.Errorf("grpcurl Create through the edge: %s", out)
	}
	t.Logf("grpcurl (reflection): list gives %s", strings.Join(strings.Fields(list), " "))

	// REST routes (google.api.http) through the edge: POST /goms creates,
	// GET /goms lists (the replica's items: maybe none).
	name = fmt.Sprintf("rest-%d", time.Now().UnixNano())
	res, err := http.Post(c.edge+"/goms", "application/json", strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(rest), `"`+name+`"`) {
		t.Errorf("POST /goms through the edge: %s %s", res.Status, rest)
	}
	res, err = http.Get(c.edge + "/goms?page_size=5")
	if err != nil {
		t.Fatal(err)
	}
	rest, _ = io.ReadAll(res.Body)
	res.Body.Close()
	var page map[string]any
	if res.StatusCode != http.StatusOK || json.Unmarshal(rest, &page) != nil {
		t.Errorf("GET /goms through the edge: %s %s", res.Status, rest)
	}
	t.Logf("REST: POST /goms and GET /goms answered 200 OK")
}

// postJSON posts a Connect JSON request with curl, over HTTP/1.1.
func postJSON(t *testing.T, url, body string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--http1.1", "--fail-with-body", "--max-time", "10",
		"-H", "Content-Type: application/json", "-d", body, url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", url, err, out)
	}
	return out
}

// grpcurl runs the grpcurl pinned in tools/go.mod.
func grpcurl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=tools/go.mod", "grpcurl", "-max-time", "10"}, args...)...)
	cmd.Dir = filepath.Join("..", "..", "..")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("grpcurl %s: %v: %s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// testDiscovery: child reaches goms through the headless Service name.
// Each child Create asks a goms replica for its parent; an unknown parent
// comes back as FailedPrecondition from goms's NotFound, and the goms
// replicas count the Gets.
func testDiscovery(t *testing.T, c *cluster) {
	pods := c.waitPods(t, "goms", 2, time.Minute)
	before := 0.0
	for _, p := range pods {
		n, err := served(p.IP)
		if err != nil {
			t.Fatal(err)
		}
		before += n
	}
	children := childv1connect.NewChildServiceClient(http.DefaultClient, c.edge, connect.WithGRPCWeb())
	// A child pod that started before any goms pod was Ready resolved
	// nothing; it finds them at its next resolution. The edge spreads the
	// calls over both child pods: ten answers in a row say both found goms.
	start, limit := time.Now(), resolveInterval+dnsTTL+5*time.Second
	for inRow := 0; inRow < 10; {
		_, err := children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: "00000000deadbeef", Name: "child"}))
		if connect.CodeOf(err) == connect.CodeFailedPrecondition {
			inRow++
			continue
		}
		inRow = 0
		if time.Since(start) > limit {
			t.Fatalf("child reaches no goms pod %v after they were Ready: %v", limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("child reached goms %v after its pods were Ready", time.Since(start).Round(100*time.Millisecond))
	const calls = 20
	for i := range calls {
		_, err := children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{
			ParentId: fmt.Sprintf("%016x", 0xdead0000+i), Name: "child", // ids goms never made
		}))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("child Create with an unknown parent: %v; want failed_precondition from goms's not_found", err)
		}
	}
	after := 0.0
	for _, p := range pods {
		n, err := served(p.IP)
		if err != nil {
			t.Fatal(err)
		}
		after += n
	}
	// The Gets of child, plus the probes' Health/Check calls, which goms
	// counts too.
	if after-before < calls {
		t.Errorf("goms replicas served %v calls during %d child Creates; want at least %d", after-before, calls, calls)
	}
	t.Logf("child reached goms through the headless Service: %d parent checks answered not_found by goms's replicas", calls)
}

// testScale: goms 2 -> 4 puts traffic on the new pods within the resolve
// interval (plus the DNS records' ttl); 4 -> 2 loses no call.
func testScale(t *testing.T, c *cluster) {
	old := c.waitPods(t, "goms", 2, time.Minute)
	l := startLoad(t, c.edge)
	time.Sleep(2 * time.Second)
	c.kubectl(t, "scale", "deployment/goms", "--replicas=4")
	pods := c.waitPods(t, "goms", 4, 2*time.Minute)
	readyAt := time.Now()
	var fresh []pod
	for _, p := range pods {
		if !slices.ContainsFunc(old, func(o pod) bool { return o.Name == p.Name }) {
			fresh = append(fresh, p)
		}
	}
	base := map[string]float64{}
	for _, p := range fresh {
		base[p.Name], _ = served(p.IP)
	}
	limit := resolveInterval + dnsTTL + 2*time.Second
	reached := map[string]time.Duration{}
	for len(reached) < len(fresh) && time.Since(readyAt) < 3*limit {
		for _, p := range fresh {
			if _, ok := reached[p.Name]; ok {
				continue
			}
			// Above the probes' count: a probe every 5s, so more than 3
			// new calls in the poll are the load's.
			if n, err := served(p.IP); err == nil && n-base[p.Name] > 3 {
				reached[p.Name] = time.Since(readyAt)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range fresh {
		d, ok := reached[p.Name]
		switch {
		case !ok:
			t.Errorf("new pod %s got no traffic within %v of turning Ready", p.Name, 3*limit)
		case d > limit:
			t.Errorf("new pod %s got traffic %v after turning Ready; want within %v (resolve interval %v + DNS ttl %v + 2s)", p.Name, d.Round(100*time.Millisecond), limit, resolveInterval, dnsTTL)
		default:
			t.Logf("new pod %s got traffic %v after it was seen Ready", p.Name, d.Round(100*time.Millisecond))
		}
	}
	up := l.stop()
	t.Logf("scale 2 -> 4 under load: %v", up)
	if up.Failed != 0 {
		t.Errorf("scale 2 -> 4: %d failed calls:%s", up.Failed, errorSummary(up))
	}

	l = startLoad(t, c.edge)
	time.Sleep(2 * time.Second)
	c.kubectl(t, "scale", "deployment/goms", "--replicas=2")
	c.waitPods(t, "goms", 2, 2*time.Minute)
	time.Sleep(2 * time.Second)
	down := l.stop()
	t.Logf("scale 4 -> 2 under load: %v", down)
	if down.Failed != 0 {
		t.Errorf("scale 4 -> 2: %d failed calls:%s", down.Failed, errorSummary(down))
	}
}

// testRolloutRestart: `kubectl rollout restart` of each Deployment under
// load fails no call.
func testRolloutRestart(t *testing.T, c *cluster) {
	for _, app := range []string{"goms", "child", "edge"} {
		t.Run(app, func(t *testing.T) {
			c.waitPods(t, app, 2, time.Minute)
			l := startLoad(t, c.edge)
			time.Sleep(2 * time.Second)
			start := time.Now()
			c.kubectl(t, "rollout", "restart", "deployment/"+app)
			c.kubectl(t, "rollout", "status", "deployment/"+app, "--timeout=3m")
			// Until the old pods are gone: their drain is part of it.
			c.waitPods(t, app, 2, 2*time.Minute)
			took := time.Since(start)
			time.Sleep(2 * time.Second)
			r := l.stop()
			t.Logf("rollout restart %s under load (%v): %v", app, took.Round(100*time.Millisecond), r)
			if r.Failed != 0 {
				t.Errorf("rollout restart %s: %d failed calls:%s", app, r.Failed, errorSummary(r))
			}
		})
	}
}

// testForceDelete: a goms pod deleted with --grace-period=0 --force under
// load. Calls in flight on it can fail; the count is reported, and the
// load must recover: no failure in the last seconds.
func testForceDelete(t *testing.T, c *cluster) {
	pods := c.waitPods(t, "goms", 2, time.Minute)
	l := startLoad(t, c.edge)
	time.Sleep(3 * time.Second)
	deleted := time.Now()
	c.kubectl(t, "delete", "pod", pods[0].Name, "--grace-period=0", "--force", "--wait=false")
	c.waitPods(t, "goms", 2, 2*time.Minute)
	time.Sleep(resolveInterval + dnsTTL)
	quiet := time.Now()
	time.Sleep(5 * time.Second)
	r := l.stop()
	last := "no failure"
	if n := len(r.Failures); n > 0 {
		last = fmt.Sprintf("last failure %v after the delete", r.Failures[n-1].at.Sub(deleted).Round(100*time.Millisecond))
	}
	t.Logf("force delete of %s under load: %v; %s%s", pods[0].Name, r, last, errorSummary(r))
	if n := l.failedSince(quiet); n != 0 {
		t.Errorf("%d calls still failed %v after the replacement pod was Ready", n, resolveInterval+dnsTTL)
	}
}

// accessLine matches a JSON access log record of goms.
var accessLine = regexp.MustCompile(`"msg":"goms: call".*"procedure":"/goms\.v1\.GoMsService/`)

// testLogs: `kubectl logs` shows the structured access log.
func testLogs(t *testing.T, c *cluster) {
	out := c.kubectl(t, "logs", "deployment/goms", "--tail=200")
	for _, line := range strings.Split(out, "\n") {
		if !accessLine.MatchString(line) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("access log line is not JSON: %v: %s", err, line)
		}
		for _, key := range []string{"time", "level", "procedure", "protocol", "code", "duration", "peer", "request_id"} {
			if _, ok := rec[key]; !ok {
				t.Errorf("access log record lacks %q: %s", key, line)
			}
		}
		t.Logf("kubectl logs deployment/goms: %s", line)
		return
	}
	t.Fatalf("no access log record of goms.v1.GoMsService in kubectl logs:\n%s", out)
}

// testMetrics: /metrics answers on the admin port of every pod.
func testMetrics(t *testing.T, c *cluster) {
	for _, app := range []string{"goms", "child", "edge"} {
		for _, p := range c.waitPods(t, app, 2, time.Minute) {
			n, err := served(p.IP)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Errorf("%s (%s): /metrics counts no call", p.Name, app)
			}
			t.Logf("%s: /metrics on %s:4242 counts %v calls", p.Name, p.IP, n)
		}
	}
}
