package goms_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

func startPolicyReplica(t *testing.T, svc *policyService) string {
	t.Helper()
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
	})
	return run.Addr("grpc")
}

// TestRemoteHedging checks that a side-effect-free call stuck on a slow
// replica is answered by the other one after the hedge delay.
func TestRemoteHedging(t *testing.T) {
	t.Parallel()
	slow := &policyService{delay: 2 * time.Second}
	fast := &policyService{}
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes: []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{startPolicyReplica(t, slow), startPolicyReplica(t, fast)}, HedgeDelay: 20 * time.Millisecond}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
		client := gomsv1connect.NewGoMsServiceClient(hc, url, opt)
		for i := range 20 {
			start := time.Now()
			if _, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "x"})); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("call %d took %v: the hedge did not answer it", i, d)
			}
		}
	}
	if slow.gets.Load() == 0 {
		t.Fatal("no call reached the slow replica: nothing was hedged")
	}
	if st := caller.Server.Remotes()[0]; st.Hedges == 0 {
		t.Errorf("Remotes: %+v, want hedges counted", st)
	}
}

// TestRemoteDeadlines checks the default deadline of a call made without
// one and the cap of one made with a longer deadline, as the handler sees
// them.
func TestRemoteDeadlines(t *testing.T) {
	t.Parallel()
	svc := &policyService{}
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes: []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{startPolicyReplica(t, svc)}, Timeout: 2 * time.Second, MaxTimeout: 5 * time.Second}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(hc, url)
	for _, c := range []struct {
		name    string
		timeout time.Duration
		want    string
	}{
		{"no deadline: the default", 0, "2s"},
		{"a shorter one travels", 1 * time.Second, "1s"},
		{"a longer one is capped", time.Hour, "5s"},
	} {
		ctx := t.Context()
		if c.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.timeout)
			defer cancel()
		}
		res, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "x"}))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := res.Msg.GetItem().GetName(); got != c.want {
			t.Errorf("%s: the handler saw %s left, want %s", c.name, got, c.want)
		}
	}
}
