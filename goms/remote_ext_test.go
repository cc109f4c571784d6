package goms_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// remoteCaller starts a server with no service of its own whose Client
// reaches GoMsService at targets.
func remoteCaller(t *testing.T, targets ...string) gomsv1connect.GoMsServiceClient {
	t.Helper()
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: targets}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	return gomsv1connect.NewGoMsServiceClient(hc, url, connect.WithGRPC())
}

func TestRemoteBalancesAndFailsOver(t *testing.T) {
	t.Parallel()
	a, runA := startReplica(t, "a")
	b, runB := startReplica(t, "b")
	client := remoteCaller(t, runA.Addr("grpc"), runB.Addr("grpc"))

	get := func() (string, error) {
		res, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
		if err != nil {
			return "", err
		}
		return res.Msg.GetItem().GetName(), nil
	}
	// Spread: 8 callers in parallel for 200 calls each reach both replicas.
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := get(); err != nil {
					if failed.Add(1) == 1 {
						t.Logf("first failure: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || a.calls.Load() == 0 || b.calls.Load() == 0 {
		t.Fatalf("before failover: %d failed, replica a %d calls, b %d; want none failed and both used", failed.Load(), a.calls.Load(), b.calls.Load())
	}
	t.Logf("spread: replica a %d calls, b %d", a.calls.Load(), b.calls.Load())

	// Failover: stop replica a abruptly (as SIGKILL would) in the middle of
	// the load. A call that never reached it must go to b (zero such
	// failures: our client reports those as unavailable); Get is idempotent
	// (NO_SIDE_EFFECTS), so calls cut before their response began are sent
	// again too. Only a call whose response was cut after it began can
	// fail: at most one per caller, with another code.
	aBefore := a.calls.Load()
	var sent, cut atomic.Int64
	stop := make(chan struct{})
	const callers = 8
	for range callers {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if _, err := get(); err != nil {
					if connect.CodeOf(err) == connect.CodeUnavailable {
						failed.Add(1)
						t.Errorf("a call that never reached a replica failed: %v", err)
					} else {
						cut.Add(1)
						t.Logf("a call cut in its response: %v", err)
					}
				}
			}
		})
	}
	// Stop a once the load reaches it.
	for deadline := time.Now().Add(5 * time.Second); a.calls.Load() == aBefore && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if err := runA.Server.Close(); err != nil {
		t.Logf("closing replica a: %v", err)
	}
	bAtClose := b.calls.Load()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("failover: %d calls sent, %d never-delivered failures, %d cut in their response; replica b served %d after a stopped",
		sent.Load(), failed.Load(), cut.Load(), b.calls.Load()-bAtClose)
	if b.calls.Load() == bAtClose {
		t.Error("replica b served no call after a stopped")
	}
	if cut.Load() > callers {
		t.Errorf("%d calls cut: more than the %d that can be in flight on the replica that stopped", cut.Load(), callers)
	}

	// Restart: a new replica a on the same address gets traffic again once
	// its endpoint's backoff (at most 5 s) has passed, with no call failing.
	a2 := &replicaService{name: "a2"}
	srvA2, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: runA.Addr("grpc"), Mode: goms.ModeGRPC}},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srvA2.Mount(gomsv1connect.NewGoMsServiceHandler(a2, srvA2.HandlerOptions()...)); err != nil {
		t.Fatal(err)
	}
	gomstest.Serve(t, srvA2)
	deadline := time.Now().Add(10 * time.Second)
	for a2.calls.Load() == 0 && time.Now().Before(deadline) {
		if _, err := get(); err != nil {
			t.Fatalf("call while replica a restarts: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a2.calls.Load() == 0 {
		t.Errorf("the restarted replica got no call in 10 s")
	}
	t.Logf("restart: the new replica a served %d calls", a2.calls.Load())
	_ = runB
}

func TestRemoteUnavailableFast(t *testing.T) {
	t.Parallel()
	// Two ports nothing listens on.
	var dead []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, ln.Addr().String())
		_ = ln.Close()
	}
	client := remoteCaller(t, dead...)
	for range 3 {
		start := time.Now()
		_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
		gomstest.WantError(t, err, connect.CodeUnavailable, gomsv1connect.GoMsServiceName)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("unavailable after %v; it must come at once, not at the deadline", d)
		}
	}
}

// TestRemoteMatchesInProcess runs the child service's calls to the goms
// service in-process and across processes' worth of sockets: same results,
// same codes.
func TestRemoteMatchesInProcess(t *testing.T) {
	t.Parallel()
	// goms alone, reachable over the network.
	gomsRun := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
	})
	// child with goms remote.
	remoteChild := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{gomsRun.Addr("grpc")}}},
	}, func(srv *goms.Server) error {
		hc, url := srv.Client(gomsv1connect.GoMsServiceName)
		parents := gomsv1connect.NewGoMsServiceClient(hc, url, append(srv.ClientOptions(), connect.WithGRPC())...)
		return srv.Mount(childv1connect.NewChildServiceHandler(testservice.NewChild(parents), srv.HandlerOptions()...))
	})
	// child and goms in one process.
	localChild := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}}, func(srv *goms.Server) error {
		return gomstest.MountTestServices(srv, connect.WithGRPC())
	})

	for _, c := range []struct {
		name  string
		child *gomstest.Running
		goms  string
	}{
		{"remote", remoteChild, gomsRun.URL("grpc")},
		{"in-process", localChild, localChild.URL("gateway")},
	} {
		t.Run(c.name, func(t *testing.T) {
			parents := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), c.goms, connect.WithGRPC())
			children := childv1connect.NewChildServiceClient(gomstest.H2C(t), c.child.URL("gateway"))
			parent, err := parents.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "parent-" + c.name}))
			if err != nil {
				t.Fatal(err)
			}
			res, err := children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: parent.Msg.GetItem().GetId(), Name: "child"}))
			if err != nil {
				t.Fatalf("child with an existing parent: %v", err)
			}
			if res.Msg.GetItem().GetParentId() != parent.Msg.GetItem().GetId() {
				t.Errorf("parent id %q, want %q", res.Msg.GetItem().GetParentId(), parent.Msg.GetItem().GetId())
			}
			_, err = children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: "0000000000000000", Name: "orphan"}))
			gomstest.WantError(t, err, connect.CodeFailedPrecondition, `parent item "0000000000000000" does not exist`)
			// A deadline shorter than any call ends in deadline_exceeded
			// either way.
			ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
			defer cancel()
			time.Sleep(time.Millisecond)
			_, err = children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: parent.Msg.GetItem().GetId(), Name: "late"}))
			gomstest.WantError(t, err, connect.CodeDeadlineExceeded)
		})
	}
}

func TestRemoteConfigErrors(t *testing.T) {
	t.Parallel()
	// remote fills in a valid remote "x" of GoMsService around r's settings.
	remote := func(r goms.Remote) goms.Remote {
		r.Name, r.Service, r.Targets = "x", gomsv1connect.GoMsServiceName, []string{"127.0.0.1:1"}
		return r
	}
	base := func(r goms.Remote) goms.Config {
		return goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0"}}, Remotes: []goms.Remote{r}}
	}
	for _, c := range []struct {
		name string
		r    goms.Remote
		want string
	}{
		{"no name", goms.Remote{Service: "goms.v1.GoMsService", Targets: []string{"127.0.0.1:1"}}, "name must not be empty"},
		{"bad service", goms.Remote{Name: "x", Service: "not a service", Targets: []string{"127.0.0.1:1"}}, "fully-qualified"},
		{"no targets", goms.Remote{Name: "x", Service: "goms.v1.GoMsService"}, "at least one"},
		{"bad target", goms.Remote{Name: "x", Service: "goms.v1.GoMsService", Targets: []string{"nohostport"}}, `target "nohostport"`},
		{"service not linked", goms.Remote{Name: "x", Service: "nowhere.v1.Gone", Targets: []string{"127.0.0.1:1"}}, "not linked into this program"},
		{"unknown method in a rule", remote(goms.Remote{Methods: []goms.RemoteMethod{{Name: "Fetch", Timeout: time.Second}}}), `remote "x": methods[0]: goms.v1.GoMsService has no method "Fetch"`},
		{"unknown idempotent method", remote(goms.Remote{Idempotent: []string{"Fetch"}}), `idempotent: goms.v1.GoMsService has no method "Fetch"`},
		{"hedge delay over the deadline", remote(goms.Remote{Methods: []goms.RemoteMethod{{Name: "Get", Timeout: 50 * time.Millisecond, HedgeDelay: 100 * time.Millisecond}}}), "hedge_delay: 100ms for Get is not shorter than its timeout 50ms"},
		{"hedging a method with side effects", remote(goms.Remote{Methods: []goms.RemoteMethod{{Name: "Create", HedgeDelay: 10 * time.Millisecond}}}), "methods[0] (Create): hedge_delay: the method is not side-effect-free"},
		{"negative budget", remote(goms.Remote{RetryBudget: -0.1}), "retry_budget: -0.1 is not between 0 and 1"},
		{"negative timeout", remote(goms.Remote{Timeout: -time.Second}), "timeout: -1s is negative"},
		{"timeout over the maximum", remote(goms.Remote{Timeout: time.Hour, MaxTimeout: time.Minute}), "timeout: 1h0m0s is longer than max_timeout 1m0s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := goms.New(base(c.r))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
	t.Run("local and remote", func(t *testing.T) {
		t.Parallel()
		cfg := base(goms.Remote{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{"127.0.0.1:1"}})
		cfg.Services = []string{gomsv1connect.GoMsServiceName}
		srv, err := goms.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)); err != nil {
			t.Fatal(err)
		}
		err = srv.Listen()
		if err == nil {
			_ = srv.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "local or remote, not both") {
			t.Errorf("Listen: %v, want the local-and-remote error", err)
		}
	})
}

// TestServices checks that Config.Services picks which of the services a
// program mounts run in this process.
func TestServices(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Services:  []string{childv1connect.ChildServiceName},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{"127.0.0.1:1"}}},
	}, func(srv *goms.Server) error { return gomstest.MountTestServices(srv, connect.WithGRPC()) })
	parents := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"))
	_, err := parents.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{}))
	gomstest.WantError(t, err, connect.CodeUnimplemented)
	children := childv1connect.NewChildServiceClient(gomstest.H2C(t), run.URL("gateway"))
	if _, err := children.List(t.Context(), connect.NewRequest(&childv1.ListRequest{})); err != nil {
		t.Errorf("the listed service does not run: %v", err)
	}

	for _, c := range []struct {
		name     string
		services []string
		want     string
	}{
		{"unknown", []string{"nope.v1.Nothing"}, "not a service this program mounts"},
	} {
		srv, err := goms.New(goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0"}}, Services: c.services})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)); err != nil {
			t.Fatal(err)
		}
		err = srv.Listen()
		if err == nil {
			_ = srv.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Listen: %v, want %q", c.name, err, c.want)
		}
	}
}
