package goms_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// BenchmarkClient compares a call through srv.Client to a co-located
// service (in-process) with the same call over a loopback h2c connection
// to the same server, both with the gRPC protocol. Client and server share
// the process: cpu-ns/op is the process's CPU time (user and system, from
// getrusage) per call, both sides together, which ns/op (wall time, with
// the loopback round trip's waits) is not. Compare the cases of one run.
func BenchmarkClient(b *testing.B) {
	svc := testservice.NewGoMs()
	srv := gomstest.Start(b, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
	})
	ctx := b.Context()
	created, err := svc.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "bench"}))
	if err != nil {
		b.Fatal(err)
	}
	req := &gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	loopback := &http.Client{Transport: &http.Transport{Protocols: &h2c}}
	inProcess, baseURL := srv.Server.Client(gomsv1connect.GoMsServiceName)
	for _, c := range []struct {
		name   string
		client gomsv1connect.GoMsServiceClient
	}{
		{"in-process", gomsv1connect.NewGoMsServiceClient(inProcess, baseURL, connect.WithGRPC())},
		{"loopback-h2c", gomsv1connect.NewGoMsServiceClient(loopback, srv.URL("gateway"), connect.WithGRPC())},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			start := processCPU(b)
			for b.Loop() {
				if _, err := c.client.Get(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU returns the CPU time the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
