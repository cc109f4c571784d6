package goms_test

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// BenchmarkEngines compares the two engines of a grpc-mode listener under
// the same grpc-go client, 50 calls in flight. Client and server share the
// process, so ns/op is the CPU of both; compare the two cases of one run.
//
// The cases "min_body_rate=off" show what timing request bodies costs.
func BenchmarkEngines(b *testing.B) {
	for _, c := range []struct {
		name   string
		engine goms.Engine
		rate   int
	}{
		{"net/http", goms.EngineNetHTTP, 0},
		{"grpc", goms.EngineGRPC, 0},
		{"net/http/min_body_rate=off", goms.EngineNetHTTP, -1},
		{"grpc/min_body_rate=off", goms.EngineGRPC, -1},
	} {
		b.Run(c.name, func(b *testing.B) {
			svc := testservice.NewGoMs()
			srv := gomstest.Start(b, goms.Config{
				Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC, Engine: c.engine, MinBodyRate: c.rate}},
			}, func(srv *goms.Server) error {
				return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
			})
			ctx := b.Context()

			created, err := svc.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "bench"}))
			if err != nil {
				b.Fatal(err)
			}
			conn, err := grpc.NewClient(srv.Addr("grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = conn.Close() })
			req := &gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}
			b.ReportAllocs()
			b.SetParallelism(25) // 50 in flight on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res := new(gomsv1.GetResponse)
					if err := conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, req, res); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
