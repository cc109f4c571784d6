package goms_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// TestMaxInFlight fills a listener's in-flight limit with calls that wait,
// and checks that the next call is shed at once with unavailable while
// health checks still answer, and that calls pass again once the slots
// free up. It runs on both engines.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	for _, l := range []goms.Listener{
		{Name: "gateway", MaxInFlight: 2},
		{Name: "grpc", Mode: goms.ModeGRPC, MaxInFlight: 2},
	} {
		t.Run(l.Name, func(t *testing.T) {
			t.Parallel()
			svc := &gatedService{gate: make(chan struct{}), entered: make(chan struct{}, 2)}
			run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{l}}, func(srv *goms.Server) error {
				return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
			})
			client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL(l.Name), connect.WithGRPC())
			get := func(ctx context.Context) error {
				_, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
				return err
			}

			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for range 2 {
				wg.Go(func() { errs <- get(t.Context()) })
			}
			for range 2 {
				select {
				case <-svc.entered:
				case <-time.After(5 * time.Second):
					t.Fatal("the first two calls did not reach the handler")
				}
			}

			start := time.Now()
			err := get(t.Context())
			if d := time.Since(start); d > time.Second {
				t.Errorf("the shed call took %v; it must fail at once", d)
			}
			gomstest.WantError(t, err, connect.CodeUnavailable, "overloaded", l.Name)

			health := grpchealth.NewClient(gomstest.H2C(t), run.URL(l.Name), connect.WithGRPC())
			if res, err := health.Check(t.Context(), &grpchealth.CheckRequest{}); err != nil || res.Status != grpchealth.StatusServing {
				t.Errorf("health check while overloaded: %v, %v; want SERVING", res, err)
			}

			close(svc.gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("an admitted call failed: %v", err)
				}
			}
			if err := get(t.Context()); err != nil {
				t.Errorf("call after the slots freed up: %v", err)
			}
		})
	}
}

// TestMaxInFlightLatency overloads a listener with many more callers than
// its limit and checks that the calls it admits keep a bounded latency and
// that the others are shed quickly, rather than all of them queuing.
func TestMaxInFlightLatency(t *testing.T) {
	t.Parallel()
	const (
		limit   = 4
		callers = 64
		calls   = 40 // per caller
	)
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway", MaxInFlight: limit}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(&gatedService{}, srv.HandlerOptions()...))
	})
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	var admitted, shed []time.Duration
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range calls {
				start := time.Now()
				_, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
				d := time.Since(start)
				mu.Lock()
				switch {
				case err == nil:
					admitted = append(admitted, d)
				case connect.CodeOf(err) == connect.CodeUnavailable:
					shed = append(shed, d)
				default:
					t.Errorf("unexpected error: %v", err)
				}
				mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(admitted) == 0 || len(shed) == 0 {
		t.Fatalf("%d admitted and %d shed calls: the load did not overload the listener", len(admitted), len(shed))
	}
	p99 := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)*99/100]
	}
	t.Logf("%d calls admitted, p99 %v; %d shed, p99 %v", len(admitted), p99(admitted), len(shed), p99(shed))
	// Generous bounds for a loaded 2-core machine under -race: the point is
	// that nothing queues for seconds.
	if p := p99(admitted); p > 2*time.Second {
		t.Errorf("p99 of admitted calls %v: the listener queues instead of shedding", p)
	}
	if p := p99(shed); p > 2*time.Second {
		t.Errorf("p99 of shed calls %v: shedding is not quick", p)
	}
}
