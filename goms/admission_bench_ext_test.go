package goms_test

import (
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// BenchmarkShed compares a call the listener sheds (max_in_flight is 1,
// and a call held at the service's gate keeps the place) with one it
// serves, both Get over gRPC on h2c with 50 in flight. Client and server
// share the process: cpu-ns/op is the CPU of both. A shed call still costs
// what comes before admission: the HTTP/2 stream, its headers, the request
// and the answer's headers and trailers.
func BenchmarkShed(b *testing.B) {
	for _, shed := range []bool{false, true} {
		name := "served"
		if shed {
			name = "shed"
		}
		b.Run(name, func(b *testing.B) {
			svc := &gatedService{}
			l := goms.Listener{Name: "gateway"}
			if shed {
				svc.gate, svc.entered = make(chan struct{}), make(chan struct{}, 1)
				defer close(svc.gate)
				l.MaxInFlight = 1
			}
			srv := gomstest.Start(b, goms.Config{Listeners: []goms.Listener{l}}, func(srv *goms.Server) error {
				return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
			})
			client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(b), srv.URL("gateway"), connect.WithGRPC())
			ctx := b.Context()
			req := &gomsv1.GetRequest{Id: "0123456789abcdef"}
			if shed {
				go func() { _, _ = client.Get(ctx, connect.NewRequest(req)) }()
				<-svc.entered // the held call has the place
			}
			b.ReportAllocs()
			b.SetParallelism(25)
			b.ResetTimer()
			start := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, err := client.Get(ctx, connect.NewRequest(req))
					ok := err == nil
					if shed {
						ok = connect.CodeOf(err) == connect.CodeUnavailable
					}
					if !ok {
						b.Errorf("shed %v: %v", shed, err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}
