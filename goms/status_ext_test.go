package goms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/prom"
)

// statusDoc is the documented schema of /status.json (docs/observability.md),
// decoded strictly: a field the server adds or drops fails the test until
// the schema here and in the docs follows.
type statusDoc struct {
	Time    time.Time `json:"time"`
	Process struct {
		Version       string    `json:"version"`
		GoVersion     string    `json:"go_version"`
		Started       time.Time `json:"started"`
		UptimeSeconds float64   `json:"uptime_seconds"`
		GOMAXPROCS    int       `json:"gomaxprocs"`
		Goroutines    int       `json:"goroutines"`
		RSSBytes      int64     `json:"rss_bytes"`
		Ready         bool      `json:"ready"`
	} `json:"process"`
	Listeners []struct {
		Name        string `json:"name"`
		Address     string `json:"address"`
		Mode        string `json:"mode"`
		Engine      string `json:"engine"`
		TLS         bool   `json:"tls"`
		Admin       bool   `json:"admin"`
		Connections int64  `json:"connections"`
		InFlight    *int64 `json:"in_flight"`
	} `json:"listeners"`
	CallStats     bool    `json:"call_stats"`
	WindowSeconds float64 `json:"window_seconds"`
	Services      []struct {
		Name      string         `json:"name"`
		Listeners []string       `json:"listeners"`
		Remote    string         `json:"remote"`
		Builtin   bool           `json:"builtin"`
		Methods   []methodStatus `json:"methods"`
	} `json:"services"`
	Clients []methodStatus `json:"clients"`
	Remotes []struct {
		Name      string   `json:"name"`
		Service   string   `json:"service"`
		Expose    []string `json:"expose"`
		Calls     int64    `json:"calls"`
		Attempts  int64    `json:"attempts"`
		Hedges    int64    `json:"hedges"`
		Throttled int64    `json:"throttled"`
		Ejections int64    `json:"ejections"`
		Healthy   int      `json:"healthy"`
		Endpoints []struct {
			Address   string  `json:"address"`
			State     string  `json:"state"`
			Healthy   bool    `json:"healthy"`
			InFlight  int64   `json:"in_flight"`
			LatencyMs float64 `json:"latency_ms"`
		} `json:"endpoints"`
	} `json:"remotes"`
	Admission struct {
		Shed        int64 `json:"shed"`
		RateLimited int64 `json:"rate_limited"`
		Throttled   int64 `json:"throttled"`
	} `json:"admission"`
	Errors []struct {
		Time      time.Time `json:"time"`
		Procedure string    `json:"procedure"`
		Code      string    `json:"code"`
		RequestID string    `json:"request_id"`
	} `json:"errors"`
}

type methodStatus struct {
	Procedure string   `json:"procedure"`
	Calls     uint64   `json:"calls"`
	Errors    uint64   `json:"errors"`
	Rate      float64  `json:"rate"`
	ErrorRate float64  `json:"error_rate"`
	P50Ms     *float64 `json:"p50_ms"`
	P99Ms     *float64 `json:"p99_ms"`
}

func getStatus(t *testing.T, admin string) (statusDoc, []byte) {
	t.Helper()
	res, err := http.Get("http://" + admin + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s, Content-Type %q: %s", "/status.json", res.Status, res.Header.Get("Content-Type"), body)
	}
	var doc statusDoc
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decoding %s: %v\n%s", "/status.json", err, body)
	}
	return doc, body
}

func findMethod(ms []methodStatus, procedure string) methodStatus {
	for _, m := range ms {
		if m.Procedure == procedure {
			return m
		}
	}
	return methodStatus{}
}

// TestStatusJSON runs the goms service in one server and the child
// service in another that calls it remotely, with metrics and an admin
// listener, makes calls (some failing, some rate limited) and checks what
// the child's /status.json says of them.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	parent := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}},
		Services:  []string{gomsv1connect.GoMsServiceName},
	}, nil)
	metrics, err := prom.New()
	if err != nil {
		t.Fatal(err)
	}
	child := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
		Services:  []string{childv1connect.ChildServiceName},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{parent.Addr("grpc")}}},
		Plugins:   []goms.Plugin{metrics},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			childv1connect.ChildServiceName + "/List": {RateLimit: goms.RateLimit{Rate: 1, Burst: 1}},
		}},
	}, nil)
	admin := child.Addr("admin")

	ctx := t.Context()
	parents := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), "http://"+parent.Addr("grpc"), connect.WithGRPC())
	p, err := parents.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "parent"}))
	if err != nil {
		t.Fatal(err)
	}
	children := childv1connect.NewChildServiceClient(gomstest.HTTP1(t), "http://"+child.Addr("gateway"))
	const creates = 20
	for i := range creates {
		if _, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: p.Msg.GetItem().GetId(), Name: "c" + string(rune('a'+i))})); err != nil {
			t.Fatal(err)
		}
	}
	// A failing call, with a request id, a secret header and a body the
	// page must not show.
	bad := connect.NewRequest(&childv1.CreateRequest{ParentId: "00000000000000ff", Name: "body-secret-marker"})
	bad.Header().Set(goms.RequestIDHeader, "status-test-id")
	bad.Header().Set("Authorization", "Bearer header-secret-marker")
	_, err = children.Create(ctx, bad)
	gomstest.WantError(t, err, connect.CodeFailedPrecondition)
	// Rate limited: one List a second gets through.
	limited := 0
	for range 5 {
		if _, err := children.List(ctx, connect.NewRequest(&childv1.ListRequest{})); connect.CodeOf(err) == connect.CodeResourceExhausted {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no List call was rate limited")
	}

	doc, body := getStatus(t, admin)
	for _, secret := range []string{"header-secret-marker", "body-secret-marker", "Authorization"} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("/status.json shows %q", secret)
		}
	}

	pr := doc.Process
	if pr.Version == "" || pr.GoVersion != runtime.Version() || pr.GOMAXPROCS != runtime.GOMAXPROCS(0) ||
		pr.Goroutines <= 0 || pr.UptimeSeconds <= 0 || !pr.Ready || time.Since(pr.Started) > time.Minute {
		t.Errorf("process: %+v", pr)
	}
	if runtime.GOOS == "linux" && pr.RSSBytes < 1<<20 {
		t.Errorf("process: rss_bytes %d", pr.RSSBytes)
	}
	if d := time.Since(doc.Time); d < 0 || d > 10*time.Second {
		t.Errorf("time %v", doc.Time)
	}

	if len(doc.Listeners) != 2 {
		t.Fatalf("listeners: %+v", doc.Listeners)
	}
	gw, adm := doc.Listeners[0], doc.Listeners[1]
	if gw.Name != "gateway" || gw.Address != child.Addr("gateway") || gw.Mode != "gateway" || gw.Engine != "net/http" ||
		gw.TLS || gw.Admin || gw.Connections < 1 || gw.InFlight == nil || *gw.InFlight != 0 {
		t.Errorf("gateway listener: %+v", gw)
	}
	if adm.Name != "admin" || adm.Address != admin || !adm.Admin || adm.Connections < 1 || adm.InFlight != nil {
		t.Errorf("admin listener: %+v", adm)
	}

	if !doc.CallStats || doc.WindowSeconds <= 0 || doc.WindowSeconds > 70 {
		t.Errorf("call_stats %v, window_seconds %v", doc.CallStats, doc.WindowSeconds)
	}
	var services []string
	for _, s := range doc.Services {
		services = append(services, s.Name)
		if s.Name != childv1connect.ChildServiceName {
			continue
		}
		if !slices.Equal(s.Listeners, []string{"gateway"}) || s.Remote != "" || s.Builtin {
			t.Errorf("child service: %+v", s)
		}
		create := findMethod(s.Methods, childv1connect.ChildServiceCreateProcedure)
		if create.Calls != creates+1 || create.Errors != 1 || create.Rate <= 0 ||
			create.ErrorRate != 1.0/(creates+1) || create.P50Ms == nil || create.P99Ms == nil || *create.P50Ms <= 0 || *create.P99Ms < *create.P50Ms {
			t.Errorf("Create: %+v", create)
		}
		list := findMethod(s.Methods, childv1connect.ChildServiceListProcedure)
		if list.Calls != 5 || list.Errors != uint64(limited) {
			t.Errorf("List: %+v (%d limited)", list, limited)
		}
		if get := findMethod(s.Methods, childv1connect.ChildServiceGetProcedure); get.Procedure == "" || get.Calls != 0 || get.P50Ms != nil {
			t.Errorf("Get, never called: %+v", get)
		}
	}
	if !slices.Contains(services, childv1connect.ChildServiceName) || !slices.Contains(services, "grpc.health.v1.Health") ||
		slices.Contains(services, gomsv1connect.GoMsServiceName) {
		t.Errorf("services: %v", services)
	}
	// The child checked the parent of each Create through its client.
	if get := findMethod(doc.Clients, gomsv1connect.GoMsServiceGetProcedure); get.Calls != creates+1 || get.Errors != 1 {
		t.Errorf("client calls of Get: %+v (clients %+v)", get, doc.Clients)
	}

	if len(doc.Remotes) != 1 {
		t.Fatalf("remotes: %+v", doc.Remotes)
	}
	r := doc.Remotes[0]
	if r.Name != "goms" || r.Service != gomsv1connect.GoMsServiceName || r.Calls != creates+1 || r.Healthy != 1 ||
		len(r.Endpoints) != 1 || len(r.Expose) != 0 {
		t.Fatalf("remote: %+v", r)
	}
	if ep := r.Endpoints[0]; ep.Address != parent.Addr("grpc") || ep.State != "ready" || !ep.Healthy || ep.InFlight != 0 || ep.LatencyMs <= 0 {
		t.Errorf("endpoint: %+v", ep)
	}

	if doc.Admission.RateLimited != int64(limited) || doc.Admission.Shed != 0 || doc.Admission.Throttled != 0 {
		t.Errorf("admission: %+v, want %d rate limited", doc.Admission, limited)
	}
	var codes []string
	found := false
	for _, e := range doc.Errors {
		codes = append(codes, e.Procedure+" "+e.Code)
		if e.Procedure == childv1connect.ChildServiceCreateProcedure && e.Code == "failed_precondition" && e.RequestID == "status-test-id" {
			found = true
		}
	}
	if !found || len(doc.Errors) != 1+limited {
		t.Errorf("errors: %v, want Create's failed_precondition with its request id and %d rate limited", codes, limited)
	}

	// The parent says NOT_SERVING, as when it drains: the page follows.
	parent.Server.SetHealth(gomsv1connect.GoMsServiceName, grpchealth.StatusNotServing)
	deadline := time.Now().Add(5 * time.Second)
	for {
		doc, _ := getStatus(t, admin)
		ep := doc.Remotes[0].Endpoints[0]
		if ep.State == "draining" && !ep.Healthy && doc.Remotes[0].Healthy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint of a parent that says NOT_SERVING: %+v after 5s", ep)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatusPage checks that the admin listener serves the page and its
// resources, from the binary and locked to themselves, and that
// DisableStatus turns it off.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	on := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, Admin: goms.Admin{Addr: "127.0.0.1:0"}}, nil)
	for path, want := range map[string]string{
		"/":                `<script src="status.js"`,
		"/status":          `<script src="status.js"`,
		"/status" + ".js":  "status.json",
		"/status" + ".css": "font",
		"/status.json":     `"listeners"`,
	} {
		res, err := http.Get("http://" + on.Addr("admin") + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) ||
			!strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("GET %s: %s, CSP %q, body without %q", path, res.Status, res.Header.Get("Content-Security-Policy"), want)
		}
	}
	res, err := http.Post("http://"+on.Addr("admin")+"/status.json", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %s", "/status.json", res.Status)
	}
	// The page's rates need a CallReporter; without one it says so.
	if doc, _ := getStatus(t, on.Addr("admin")); doc.CallStats {
		t.Error("call_stats without a metrics plugin")
	}
	// Not on the service listeners.
	res, err = http.Get("http://" + on.Addr("gateway") + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s on the gateway listener: %s", "/status.json", res.Status)
	}

	cfg, err := goms.LoadConfig([]byte("listeners: [{name: gateway}]"), "", "admin.address=127.0.0.1:0", "admin.disable_status=true")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Admin.DisableStatus {
		t.Fatal("admin.disable_status=true did not set Admin.DisableStatus")
	}
	off := gomstest.Start(t, cfg, nil)
	for _, path := range []string{"/", "/status", "/status.json"} {
		res, err := http.Get("http://" + off.Addr("admin") + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s with disable_status: %s", path, res.Status)
		}
	}
}

// BenchmarkStatusPage measures what the status page costs the calls of a
// server with metrics: the same gRPC calls, 50 in flight, with the page
// off (DisableStatus) and on, and on with the page open (status.json read
// every second, as the page does). Client and server share the process,
// so ns/op is the CPU of both; compare the cases of one run.
func BenchmarkStatusPage(b *testing.B) {
	for _, c := range []struct {
		name       string
		off, watch bool
	}{{"off", true, false}, {"on", false, false}, {"on-watched", false, true}} {
		b.Run(c.name, func(b *testing.B) {
			metrics, err := prom.New()
			if err != nil {
				b.Fatal(err)
			}
			srv := gomstest.Start(b, goms.Config{
				Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}},
				Admin:     goms.Admin{Addr: "127.0.0.1:0", DisableStatus: c.off},
				Plugins:   []goms.Plugin{metrics},
			}, nil)
			ctx := b.Context()
			client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(b), "http://"+srv.Addr("grpc"), connect.WithGRPC())
			created, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "bench"}))
			if err != nil {
				b.Fatal(err)
			}
			if c.watch {
				stop := make(chan struct{})
				done := make(chan struct{})
				defer func() { close(stop); <-done }()
				go func() {
					defer close(done)
					t := time.NewTicker(time.Second)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							if res, err := http.Get("http://" + srv.Addr("admin") + "/status.json"); err == nil {
								_, _ = io.Copy(io.Discard, res.Body)
								res.Body.Close()
							}
						}
					}
				}()
			}
			req := &gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}
			b.ReportAllocs()
			b.SetParallelism(25)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Get(ctx, connect.NewRequest(req)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestStatusInFlight checks the listener's calls in flight and open
// connections as a stream opens and ends.
func TestStatusInFlight(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", MaxInFlight: 10}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
	}, nil)
	admin := run.Addr("admin")
	gateway := func() (inFlight, conns int64) {
		doc, _ := getStatus(t, admin)
		for _, l := range doc.Listeners {
			if l.Name == "gateway" {
				if l.InFlight == nil {
					t.Fatal("gateway listener with max_in_flight: in_flight is null")
				}
				return *l.InFlight, l.Connections
			}
		}
		t.Fatal("no gateway listener")
		return 0, 0
	}
	waitFor := func(want int64) int64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, conns := gateway()
			if n == want {
				return conns
			}
			if time.Now().After(deadline) {
				t.Fatalf("in_flight %d, want %d", n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, conns := gateway(); conns != 0 {
		t.Fatalf("connections %d before any call", conns)
	}
	ctx, cancel := context.WithCancel(t.Context())
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), "http://"+run.Addr("gateway"), connect.WithGRPC())
	stream, err := client.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if conns := waitFor(1); conns != 1 {
		t.Errorf("connections %d with one stream open, want 1", conns)
	}
	cancel()
	_ = stream.Close()
	waitFor(0)
}
