package goms_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	healthv1 "google.golang.org/grpc/health/grpc_health_v1"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// hammer calls get from n goroutines for d and returns the calls let
// through, those refused with resource_exhausted, and how long the run
// took. Any other error fails the test.
func hammer(t *testing.T, n int, d time.Duration, get func(ctx context.Context) error) (allowed, refused int, elapsed time.Duration) {
	t.Helper()
	var ok, no atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range n {
		wg.Go(func() {
			for time.Now().Before(end) {
				err := get(t.Context())
				switch {
				case err == nil:
					ok.Add(1)
				case connect.CodeOf(err) == connect.CodeResourceExhausted:
					no.Add(1)
					checkRetryInfo(t, err)
				default:
					t.Errorf("call: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load()), int(no.Load()), time.Since(start)
}

// checkRetryInfo checks that a rate limited call says when to retry.
func checkRetryInfo(t *testing.T, err error) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("not a connect error: %v", err)
		return
	}
	var delay time.Duration
	for _, d := range ce.Details() {
		if m, derr := d.Value(); derr == nil {
			if ri, ok := m.(*errdetails.RetryInfo); ok {
				delay = ri.GetRetryDelay().AsDuration()
			}
		}
	}
	if delay <= 0 || delay > time.Second {
		t.Errorf("RetryInfo delay %v; want one in (0, 1s]", delay)
	}
	if ce.Meta().Get("Grpc-Retry-Pushback-Ms") == "" || ce.Meta().Get("Retry-After") == "" {
		t.Errorf("metadata %v lacks grpc-retry-pushback-ms or Retry-After", ce.Meta())
	}
}

// within5 checks that allowed is within 5% of what a bucket of rate and
// burst lets through in elapsed.
func within5(t *testing.T, name string, allowed, refused int, elapsed time.Duration, rate float64, burst int) {
	t.Helper()
	want := float64(burst) + rate*elapsed.Seconds()
	t.Logf("%s: %d allowed, %d refused in %v; the bucket allows %.0f", name, allowed, refused, elapsed.Round(time.Millisecond), want)
	if math.Abs(float64(allowed)-want) > 0.05*want {
		t.Errorf("%s: %d calls allowed; want %.0f ± 5%%", name, allowed, want)
	}
	if refused == 0 {
		t.Errorf("%s: no call refused", name)
	}
}

func getter(client gomsv1connect.GoMsServiceClient, header ...string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req := connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"})
		for i := 0; i+1 < len(header); i += 2 {
			req.Header().Set(header[i], header[i+1])
		}
		_, err := client.Get(ctx, req)
		return err
	}
}

// fromIP returns an h2c client whose connections come from ip, one of
// 127.0.0.0/8.
func fromIP(t *testing.T, ip string) *http.Client {
	c := gomstest.H2C(t)
	tr := c.Transport.(*http.Transport).Clone()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr.DialContext = dialer.DialContext
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestRateLimit checks each shape of rule: a bucket for a method, one per
// identity, one per anonymous peer address. The calls let through match
// the bucket within 5%, and refusals say when to retry.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	// A second's worth of burst: a client the machine leaves off the CPU
	// for less than that loses no token.
	const rate, burst = 40.0, 40
	d := 3 * time.Second
	get := gomsv1connect.GoMsServiceName + "/Get"
	start := func(t *testing.T, rl goms.RateLimit, auth goms.Auth) *gomstest.Running {
		return gomstest.Start(t, goms.Config{
			Listeners:    []goms.Listener{{Name: "gateway"}},
			Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{get: {RateLimit: rl}}},
			Auth:         auth,
		}, func(srv *goms.Server) error {
			return srv.Mount(gomsv1connect.NewGoMsServiceHandler(&gatedService{}, srv.HandlerOptions()...))
		})
	}

	t.Run("method", func(t *testing.T) {
		t.Parallel()
		run := start(t, goms.RateLimit{Rate: rate, Burst: burst}, goms.Auth{})
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
		allowed, refused, elapsed := hammer(t, 4, d, getter(client))
		within5(t, "method", allowed, refused, elapsed, rate, burst)
	})

	t.Run("identity", func(t *testing.T) {
		t.Parallel()
		run := start(t, goms.RateLimit{Rate: rate, Burst: burst, PerCaller: true}, goms.Auth{
			Default: "authenticated",
			Verifier: func(_ context.Context, c goms.Credentials) (goms.Identity, error) {
				return goms.Identity{Subject: c.Bearer}, nil
			},
		})
		// Both callers share one connection: only their identities tell
		// them apart.
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"))
		var wg sync.WaitGroup
		for _, who := range []string{"alice", "bob"} {
			wg.Go(func() {
				allowed, refused, elapsed := hammer(t, 2, d, getter(client, "Authorization", "Bearer "+who))
				within5(t, who, allowed, refused, elapsed, rate, burst)
			})
		}
		wg.Wait()
	})

	t.Run("anonymous peer", func(t *testing.T) {
		t.Parallel()
		run := start(t, goms.RateLimit{Rate: rate, Burst: burst, PerCaller: true}, goms.Auth{})
		// A listener on 127.0.0.1 answers calls from any 127/8 address.
		var wg sync.WaitGroup
		for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
			client := gomsv1connect.NewGoMsServiceClient(fromIP(t, ip), run.URL("gateway"), connect.WithGRPCWeb())
			wg.Go(func() {
				allowed, refused, elapsed := hammer(t, 2, d, getter(client))
				within5(t, ip, allowed, refused, elapsed, rate, burst)
			})
		}
		wg.Wait()
	})
}

// TestRateLimitREST checks that a REST caller over its rate gets 429 with
// Retry-After.
func TestRateLimitREST(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "http", Mode: goms.ModeHTTP, REST: true}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName: {RateLimit: goms.RateLimit{Rate: 0.5, Burst: 1}},
		}},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(&gatedService{}, srv.HandlerOptions()...))
	})
	client := gomstest.HTTP1(t)
	url := run.URL("http") + "/goms/0123456789abcdef"
	var statuses []int
	var retryAfter string
	for range 2 {
		res, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		statuses = append(statuses, res.StatusCode)
		retryAfter = res.Header.Get("Retry-After")
	}
	if statuses[0] != http.StatusOK || statuses[1] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v; want [200 429]", statuses)
	}
	if s, err := strconv.Atoi(retryAfter); err != nil || s < 1 || s > 2 {
		t.Errorf("Retry-After %q; want 1 or 2 seconds", retryAfter)
	}
}

// deadlineService reports the time left before the deadline of its
// handler's context in the Get response's item name ("none" without one).
type deadlineService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func (deadlineService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	left := "none"
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl).String()
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId(), Name: left}}), nil
}

// TestServerDeadline checks the default deadline of calls that come
// without one and the cap on those that ask for more, on each protocol, as
// the handler's context shows them.
func TestServerDeadline(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName + "/Get": {Timeout: 3 * time.Second, MaxTimeout: 5 * time.Second},
		}},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(deadlineService{}, srv.HandlerOptions()...))
	})
	protocols := map[string]connect.ClientOption{
		"connect": connect.WithProtoJSON(), "grpc": connect.WithGRPC(), "grpcweb": connect.WithGRPCWeb(),
	}
	for name, opt := range protocols {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), opt)
		for _, c := range []struct {
			name     string
			asked    time.Duration // 0: no deadline
			min, max time.Duration
		}{
			{"none: the default", 0, 2500 * time.Millisecond, 3 * time.Second},
			{"more than the max: capped", time.Minute, 4500 * time.Millisecond, 5 * time.Second},
			{"less: kept", time.Second, 500 * time.Millisecond, time.Second},
		} {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				ctx := t.Context()
				if c.asked > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, c.asked)
					defer cancel()
				}
				res, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
				if err != nil {
					t.Fatal(err)
				}
				left, err := time.ParseDuration(res.Msg.GetItem().GetName())
				if err != nil {
					t.Fatalf("the handler saw no deadline (%q)", res.Msg.GetItem().GetName())
				}
				if left < c.min || left > c.max {
					t.Errorf("the handler had %v left; want %v to %v", left, c.min, c.max)
				}
			})
		}
	}
}

// TestShedPriorities fills a listener's adaptive limit (Max 4, so that it
// starts there) with calls that wait, and checks who gets in: sheddable
// calls stop at three quarters of it, normal ones at it, critical ones at
// twice it; health checks always; refusals carry gRPC's pushback.
func TestShedPriorities(t *testing.T) {
	t.Parallel()
	svc := &gatedService{gate: make(chan struct{}), entered: make(chan struct{}, 8)}
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", AdaptiveLimit: goms.AdaptiveLimit{Min: 1, Max: 4}}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName + "/List":   {Priority: "sheddable"},
			gomsv1connect.GoMsServiceName + "/Delete": {Priority: "critical"},
		}},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
	})
	defer close(svc.gate)
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
	block := func(n int) {
		for range n {
			go func() { _ = getter(client)(t.Context()) }()
			select {
			case <-svc.entered:
			case <-time.After(5 * time.Second):
				t.Fatal("a call did not reach the handler")
			}
		}
	}
	admitted := func(call func() error) bool {
		err := call()
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable:
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Meta().Get("Grpc-Retry-Pushback-Ms") == "" {
				t.Errorf("shed without grpc-retry-pushback-ms: %v", ce.Meta())
			}
			return false
		case connect.CodeUnimplemented: // List and Delete, once admitted
			return true
		}
		t.Fatalf("unexpected answer: %v", err)
		return false
	}
	list := func() error {
		_, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{}))
		return err
	}
	del := func() error {
		_, err := client.Delete(t.Context(), connect.NewRequest(&gomsv1.DeleteRequest{Id: "0123456789abcdef"}))
		return err
	}
	block(2)
	if !admitted(list) {
		t.Error("2 in flight of 4: a sheddable call was shed")
	}
	block(1)
	if admitted(list) {
		t.Error("3 in flight of 4: a sheddable call was admitted")
	}
	block(1)
	if err := getter(client)(t.Context()); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("4 in flight of 4: a normal call got %v; want unavailable", err)
	}
	if !admitted(del) {
		t.Error("4 in flight of 4: a critical call was shed")
	}
	health := connect.NewClient[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse](
		gomstest.H2C(t), run.URL("gateway")+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	if _, err := health.CallUnary(t.Context(), connect.NewRequest(&healthv1.HealthCheckRequest{})); err != nil {
		t.Errorf("health check at the limit: %v", err)
	}
}

// TestAdmissionConfigErrors checks that New names the key at fault.
func TestAdmissionConfigErrors(t *testing.T) {
	t.Parallel()
	get := gomsv1connect.GoMsServiceName + "/Get"
	for _, c := range []struct {
		name string
		cfg  goms.Config
		want string
	}{
		{"priority", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{get: {Priority: "urgent"}}}},
			`goms: interceptors.rules["goms.v1.GoMsService/Get"]: priority "urgent": want "critical", "normal" or "sheddable"`},
		{"rate", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{get: {RateLimit: goms.RateLimit{Rate: -1}}}}},
			`goms: interceptors.rules["goms.v1.GoMsService/Get"]: rate_limit.rate: -1 is not a rate`},
		{"burst without rate", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{get: {RateLimit: goms.RateLimit{Burst: 3}}}}},
			`goms: interceptors.rules["goms.v1.GoMsService/Get"]: rate_limit: burst, per_caller and max_callers need a rate`},
		{"timeout", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{get: {Timeout: -time.Second}}}},
			`goms: interceptors.rules["goms.v1.GoMsService/Get"]: timeout and max_timeout must not be negative`},
		{"adaptive", goms.Config{Listeners: []goms.Listener{{Name: "x", Addr: "127.0.0.1:0", AdaptiveLimit: goms.AdaptiveLimit{Min: 10, Max: 5}}}},
			`goms: listener "x": adaptive_limit: min 10 is above max 5`},
		{"tolerance", goms.Config{Listeners: []goms.Listener{{Name: "x", Addr: "127.0.0.1:0", AdaptiveLimit: goms.AdaptiveLimit{Tolerance: 0.5}}}},
			`goms: listener "x": adaptive_limit: tolerance 0.5 is below 1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.Listeners == nil {
				c.cfg.Listeners = []goms.Listener{{Name: "x", Addr: "127.0.0.1:0"}}
			}
			_, err := goms.New(c.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("New: %v; want %s…", err, c.want)
			}
		})
	}
}

// TestAdmissionYAML loads the admission settings from YAML.
func TestAdmissionYAML(t *testing.T) {
	t.Parallel()
	cfg, err := goms.LoadConfig([]byte(`
listeners:
  - name: public
    address: 127.0.0.1:0
    max_in_flight: 500
    adaptive_limit: {min: 8, max: 400, tolerance: 2, window: 200ms}
interceptors:
  rules:
    goms.v1.GoMsService: {priority: sheddable, timeout: 2s, max_timeout: 10s}
    goms.v1.GoMsService/Get:
      priority: critical
      rate_limit: {rate: 50, burst: 100, per_caller: true}
`), "", "listeners.public.adaptive_limit.disabled=true")
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listeners[0]
	if want := (goms.AdaptiveLimit{Disabled: true, Min: 8, Max: 400, Tolerance: 2, Window: 200 * time.Millisecond}); l.AdaptiveLimit != want || l.MaxInFlight != 500 {
		t.Errorf("listener: %+v", l)
	}
	svc, get := cfg.Interceptors.Rules["goms.v1.GoMsService"], cfg.Interceptors.Rules["goms.v1.GoMsService/Get"]
	if svc.Priority != "sheddable" || svc.Timeout != 2*time.Second || svc.MaxTimeout != 10*time.Second {
		t.Errorf("service rule: %+v", svc)
	}
	if get.Priority != "critical" || get.RateLimit != (goms.RateLimit{Rate: 50, Burst: 100, PerCaller: true}) {
		t.Errorf("method rule: %+v", get)
	}
	if _, err := goms.New(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestServerDeadlineREST checks that a REST call, which carries no
// deadline, gets its method's default.
func TestServerDeadlineREST(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "http", Mode: goms.ModeHTTP, REST: true}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName + "/Get": {Timeout: 3 * time.Second},
		}},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(deadlineService{}, srv.HandlerOptions()...))
	})
	res, err := gomstest.HTTP1(t).Get(run.URL("http") + "/goms/0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Item struct{ Name string }
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	left, err := time.ParseDuration(body.Item.Name)
	if err != nil || left < 2500*time.Millisecond || left > 3*time.Second {
		t.Errorf("the handler of a REST call had %q left; want about 3s", body.Item.Name)
	}
}
