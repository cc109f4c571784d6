// Command grpc runs the goms and child example services on one gRPC-only
// listener, as the original GoMs grpc example did.
package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/goms"
)

func main() {
	host := flag.String("grpc-host", "127.0.0.1", "gRPC listener host")
	port := flag.Int("grpc-port", 42001, "gRPC listener port")
	flag.Parse()
	logger := app.Logger()
	// SIGINT and SIGTERM drain and stop the server; a second one stops
	// the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	cfg := goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: net.JoinHostPort(*host, strconv.Itoa(*port)), Mode: goms.ModeGRPC}},
		Logger:    logger,
	}
	shutdown, err := app.Configure(ctx, &cfg)
	var srv *goms.Server
	if err == nil {
		defer func() { _ = shutdown(context.Background()) }()
		srv, err = goms.New(cfg)
	}
	if err == nil {
		err = app.MountAll(srv, connect.WithGRPC())
	}
	if err == nil {
		err = srv.Serve(ctx)
	}
	if err != nil {
		logger.Error("grpc", "err", err)
		os.Exit(1)
	}
}
