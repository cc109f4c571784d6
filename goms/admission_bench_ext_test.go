package goms_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// blockingService answers Get at once, except for the id "block", whose
// call holds its place until block is closed.
type blockingService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	block   chan struct{}
	started chan struct{}
}

func (s blockingService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if req.Msg.GetId() == "block" {
		close(s.started)
		select {
		case <-s.block:
		case <-ctx.Done():
		}
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

// BenchmarkShed compares a call the listener sheds (max_in_flight is 1,
// and a blocked call holds the place) with one it serves, both Get over
// gRPC on h2c with 50 in flight. Client and server share the process:
// cpu-ns/op is the CPU of both. A shed call still costs what comes before
// admission: the HTTP/2 stream, its headers, the request and the answer's
// headers and trailers.
func BenchmarkShed(b *testing.B) {
	for _, shed := range []bool{false, true} {
		name := "served"
		if shed {
			name = "shed"
		}
		b.Run(name, func(b *testing.B) {
			svc := blockingService{block: make(chan struct{}), started: make(chan struct{})}
			defer close(svc.block)
			l := goms.Listener{Name: "gateway"}
			if shed {
				l.MaxInFlight = 1
			}
			srv := gomstest.Start(b, goms.Config{Listeners: []goms.Listener{l}}, func(srv *goms.Server) error {
				return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
			})
			var h2c http.Protocols
			h2c.SetUnencryptedHTTP2(true)
			hc := &http.Client{Transport: &http.Transport{Protocols: &h2c}}
			c := gomsv1connect.NewGoMsServiceClient(hc, srv.URL("gateway"), connect.WithGRPC())
			ctx := b.Context()
			if shed {
				go func() { _, _ = c.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "block"})) }()
				<-svc.started
			}
			b.ReportAllocs()
			b.SetParallelism(25)
			b.ResetTimer()
			start := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, err := c.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "x"}))
					if shed != (connect.CodeOf(err) == connect.CodeUnavailable) {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}
