// Command grpc runs the goms and child example services on one gRPC-only
// listener, as the original GoMs grpc example did.
package main

import (
	"context"
	"flag"
	"net"
	"os"
	"strconv"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/internal/app"
	"github.com/reversTeam/go-ms/goms"
)

func main() {
	host := flag.String("grpc-host", "127.0.0.1", "gRPC listener host")
	port := flag.Int("grpc-port", 42001, "gRPC listener port")
	flag.Parse()
	logger := app.Logger()
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: net.JoinHostPort(*host, strconv.Itoa(*port)), Mode: goms.ModeGRPC}},
		Logger:    logger,
	})
	if err == nil {
		err = app.MountAll(srv, connect.WithGRPC())
	}
	if err == nil {
		ctx, stop := goms.SignalContext(context.Background())
		defer stop()
		err = srv.Serve(ctx)
	}
	if err != nil {
		logger.Error("grpc", "err", err)
		os.Exit(1)
	}
}
