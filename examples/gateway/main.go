// Command gateway runs the goms and child example services on two
// listeners, as the original GoMs gateway example ran a gRPC server and an
// HTTP gateway: gRPC on -grpc-host:-grpc-port, Connect and gRPC-Web on
// -http-host:-http-port. With -single ADDR it runs one gateway-mode
// listener that serves all three protocols instead.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"strconv"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/internal/app"
	"github.com/reversTeam/go-ms/goms"
)

func main() {
	grpcHost := flag.String("grpc-host", "127.0.0.1", "gRPC listener host")
	grpcPort := flag.Int("grpc-port", 42001, "gRPC listener port")
	httpHost := flag.String("http-host", "127.0.0.1", "HTTP (Connect and gRPC-Web) listener host")
	httpPort := flag.Int("http-port", 8080, "HTTP (Connect and gRPC-Web) listener port")
	single := flag.String("single", "", "serve all protocols on this one address (gateway mode) instead of two listeners")
	flag.Parse()

	listeners := []goms.Listener{
		{Name: "grpc", Addr: net.JoinHostPort(*grpcHost, strconv.Itoa(*grpcPort)), Mode: goms.ModeGRPC},
		{Name: "http", Addr: net.JoinHostPort(*httpHost, strconv.Itoa(*httpPort)), Mode: goms.ModeHTTP},
	}
	if *single != "" {
		listeners = []goms.Listener{{Name: "gateway", Addr: *single, Mode: goms.ModeGateway}}
	}
	logger := app.Logger()
	if err := run(listeners, logger); err != nil {
		logger.Error("gateway", "err", err)
		os.Exit(1)
	}
}

func run(listeners []goms.Listener, logger *slog.Logger) error {
	ctx, stop := goms.SignalContext(context.Background())
	defer stop()
	// /metrics and the probes on the admin listener, 127.0.0.1:4242, where
	// the original GoMs exporter served its metrics.
	cfg := goms.Config{Listeners: listeners, Logger: logger, Admin: goms.Admin{Addr: goms.DefaultAdminAddr}}
	shutdown, err := app.Configure(ctx, &cfg)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	// The child service calls the goms service over gRPC, the protocol
	// both setups serve.
	if err := app.MountAll(srv, connect.WithGRPC()); err != nil {
		return err
	}
	return srv.Serve(ctx)
}
