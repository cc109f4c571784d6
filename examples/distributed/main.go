// Command distributed is one binary that runs any part of the example
// system, as its configuration says: the goms service alone, the child
// service alone calling goms remotely, an edge that exposes both remote
// services on one gateway listener, or everything in one process. See the
// YAML files beside it and `make run-distributed`.
//
//	go run ./examples/distributed -config examples/distributed/goms.yaml
//
// Configuration layers: -config file, GOMS_* environment variables, -set
// key=value flags (see docs/config.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/goms"
)

func main() {
	configFile := flag.String("config", "", "YAML configuration file (required)")
	var set app.SetFlags
	flag.Var(&set, "set", "configuration override key=value (repeatable)")
	flag.Parse()
	if err := run(*configFile, set); err != nil {
		fmt.Fprintln(os.Stderr, "distributed:", err)
		os.Exit(1)
	}
}

func run(configFile string, set []string) error {
	if configFile == "" {
		return fmt.Errorf("-config is required: one of the YAML files in examples/distributed")
	}
	cfg, err := goms.LoadConfig(nil, configFile, set...)
	if err != nil {
		return err
	}
	// SIGINT and SIGTERM drain and stop the server; a second one stops
	// the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	shutdown, err := app.Configure(ctx, &cfg)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	if err := app.ObserveRemotes(cfg, srv); err != nil {
		return err
	}
	// Every service is mounted; the configuration's services and remotes
	// decide which run here. The child service reaches the goms service
	// through srv.Client: in-process when both run here, over gRPC to the
	// remote's endpoints otherwise.
	if err := app.MountAll(srv, connect.WithGRPC()); err != nil {
		return err
	}
	return srv.Serve(ctx)
}
