// Command gateway runs the goms and child example services on two
// listeners, as the original GoMs gateway example ran a gRPC server and an
// HTTP gateway: gRPC on -grpc-host:-grpc-port, Connect, gRPC-Web, the
// gateway's REST routes (GET /goms, …), the OpenAPI document
// (/openapi.json) and its docs page (/docs) on -http-host:-http-port, and
// metrics on the admin listener. With -single
// ADDR it runs one gateway-mode listener that serves all three protocols
// instead.
//
// Its configuration is layered, each layer overriding the ones before:
// the defaults below, the YAML file of -config, GOMS_* environment
// variables, then flags (-set key=value, and the flags above).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/goms"
)

// defaults is the configuration of the original gateway example.
const defaults = `
listeners:
  - {name: grpc, address: "127.0.0.1:42001", mode: grpc}
  - {name: http, address: "127.0.0.1:8080", mode: http, rest: true, openapi: true}
admin:
  address: "127.0.0.1:4242"
`

func main() {
	configFile := flag.String("config", "", "YAML configuration file")
	var set app.SetFlags
	flag.Var(&set, "set", "configuration override key=value, e.g. -set listeners.http.mode=gateway (repeatable)")
	grpcHost := flag.String("grpc-host", "127.0.0.1", "gRPC listener host")
	grpcPort := flag.Int("grpc-port", 42001, "gRPC listener port")
	httpHost := flag.String("http-host", "127.0.0.1", "HTTP (Connect and gRPC-Web) listener host")
	httpPort := flag.Int("http-port", 8080, "HTTP (Connect and gRPC-Web) listener port")
	single := flag.String("single", "", "serve all protocols on this one address (gateway mode) instead of two listeners")
	flag.Parse()

	// The original flags win over everything, but only when given.
	var overrides []string
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "grpc-host", "grpc-port":
			overrides = append(overrides, "listeners.grpc.address="+net.JoinHostPort(*grpcHost, strconv.Itoa(*grpcPort)))
		case "http-host", "http-port":
			overrides = append(overrides, "listeners.http.address="+net.JoinHostPort(*httpHost, strconv.Itoa(*httpPort)))
		}
	})
	cfg, err := goms.LoadConfig([]byte(defaults), *configFile, append(set, overrides...)...)
	if err == nil && *single != "" {
		cfg.Listeners = []goms.Listener{{Name: "gateway", Addr: *single, Mode: goms.ModeGateway, REST: true, OpenAPI: true}}
	}
	if err == nil {
		err = run(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(cfg goms.Config) error {
	// SIGINT and SIGTERM drain and stop the server; a second one stops
	// the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	srv, shutdown, err := newServer(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	return srv.Serve(ctx)
}

// newServer configures the example's plugins and mounts its services.
func newServer(ctx context.Context, cfg goms.Config) (*goms.Server, func(context.Context) error, error) {
	shutdown, err := app.Configure(ctx, &cfg)
	if err != nil {
		return nil, nil, err
	}
	srv, err := goms.New(cfg)
	if err == nil {
		// The child service calls the goms service in-process, with the
		// gRPC protocol.
		err = app.MountAll(srv, connect.WithGRPC())
	}
	if err != nil {
		_ = shutdown(ctx)
		return nil, nil, err
	}
	return srv, shutdown, nil
}
