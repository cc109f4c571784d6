package goms_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// TestRemoteHealthFailsOpen checks the health checks of remote endpoints:
// an endpoint that says NOT_SERVING gets no call while another serves, and
// when none serves, as the last replicas of a rolling update drain before
// the names hold their replacements, calls still go to those that drain
// instead of failing. The caller's status tells each endpoint's state.
func TestRemoteHealthFailsOpen(t *testing.T) {
	t.Parallel()
	a, runA := startReplica(t, "a")
	b, runB := startReplica(t, "b")
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes: []goms.Remote{{
			Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{runA.Addr("grpc"), runB.Addr("grpc")},
		}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(hc, url)

	states := func() map[string]string {
		out := map[string]string{}
		for _, ep := range caller.Server.Remotes()[0].Endpoints {
			out[ep.Addr] = ep.State
		}
		return out
	}
	waitStates := func(want map[string]string) {
		t.Helper()
		var got map[string]string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			got = states()
			if len(got) == len(want) && got[runA.Addr("grpc")] == want[runA.Addr("grpc")] && got[runB.Addr("grpc")] == want[runB.Addr("grpc")] {
				return
			}
		}
		t.Fatalf("endpoint states %v, want %v within 5 s", got, want)
	}
	calls := func(n int) (aCalls, bCalls int64) {
		t.Helper()
		a0, b0 := a.calls.Load(), b.calls.Load()
		for i := range n {
			if _, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"})); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		return a.calls.Load() - a0, b.calls.Load() - b0
	}
	addrA, addrB := runA.Addr("grpc"), runB.Addr("grpc")

	// Both serve.
	if _, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"})); err != nil {
		t.Fatal(err)
	}
	waitStates(map[string]string{addrA: "ready", addrB: "ready"})

	// a drains: it gets no new call.
	runA.Server.SetHealth(gomsv1connect.GoMsServiceName, grpchealth.StatusNotServing)
	waitStates(map[string]string{addrA: "draining", addrB: "ready"})
	// (Get is hedged: a replica may serve a call twice.)
	if ca, cb := calls(200); ca != 0 || cb < 200 {
		t.Fatalf("a draining: replica a got %d calls, b %d; want all on b", ca, cb)
	}

	// Both drain: calls fail open to them rather than failing (calls
	// fails the test on an error).
	runB.Server.SetHealth(gomsv1connect.GoMsServiceName, grpchealth.StatusNotServing)
	waitStates(map[string]string{addrA: "draining", addrB: "draining"})
	if ca, cb := calls(200); ca+cb < 200 {
		t.Fatalf("both draining: replicas a and b served %d and %d of 200 calls", ca, cb)
	}

	// a serves again: it takes every call.
	runA.Server.SetHealth(gomsv1connect.GoMsServiceName, grpchealth.StatusServing)
	waitStates(map[string]string{addrA: "ready", addrB: "draining"})
	if ca, cb := calls(200); ca < 200 || cb != 0 {
		t.Fatalf("a back: replica a got %d calls, b %d; want all on a", ca, cb)
	}
}

// TestRemoteHealthNoService checks that a process that runs on an
// endpoint's address without the service (a bad deploy) gets no call while
// another endpoint serves it.
func TestRemoteHealthNoService(t *testing.T) {
	t.Parallel()
	good, runGood := startReplica(t, "good")
	bad := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(*goms.Server) error { return nil })
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes: []goms.Remote{{
			Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{runGood.Addr("grpc"), bad.Addr("grpc")},
		}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(hc, url)
	var st map[string]string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, _ = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
		st = map[string]string{}
		for _, ep := range caller.Server.Remotes()[0].Endpoints {
			st[ep.Addr] = ep.State
		}
		if st[bad.Addr("grpc")] == "no_service" && st[runGood.Addr("grpc")] == "ready" {
			break
		}
	}
	if st[bad.Addr("grpc")] != "no_service" || st[runGood.Addr("grpc")] != "ready" {
		t.Fatalf("endpoint states %v; want the bad deploy no_service and the replica ready", st)
	}
	before := good.calls.Load()
	for i := range 200 {
		if _, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"})); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := good.calls.Load() - before; n < 200 {
		t.Fatalf("the serving replica got %d of 200 calls", n)
	}
}
