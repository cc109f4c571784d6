package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/goms/tracing"
)

// gomsSetup is how one goms kind departs from the default stack of
// gomsConfig.
type gomsSetup struct {
	// engine serves the grpc listener.
	engine goms.Engine
	// interceptors, when not nil, replaces the default selection of
	// interceptors.
	interceptors []string
	// configure, when not nil, adds plugins, auth or logging to cfg and
	// may name the access log file in hello. Its cleanup runs once the
	// server has stopped.
	configure func(ctx context.Context, cfg *goms.Config, hello *admin.Hello) (cleanup func(context.Context) error, err error)
}

// gomsSetups are the goms kinds, by -kind value.
var gomsSetups = map[string]gomsSetup{
	"goms":                {engine: goms.EngineNetHTTP, configure: configureExample},
	"goms-grpcengine":     {engine: goms.EngineGRPC},
	"goms-nointerceptors": {engine: goms.EngineNetHTTP, interceptors: []string{}, configure: configureExample},
	"goms-default":        {engine: goms.EngineNetHTTP},
	"goms-observed":       {engine: goms.EngineNetHTTP, configure: configureObserved},
}

// Names of the listeners of gomsConfig.
const (
	// listenerGRPC is the grpc-mode listener, where gRPC clients go.
	listenerGRPC = "grpc"
	// listenerHTTP is the http-mode listener, where Connect, gRPC-Web and
	// JSON clients go.
	listenerHTTP = "http"
)

// gomsConfig returns the default stack of the goms kinds: examples/gateway's
// listeners, each on a free port of host (a grpc-mode listener served by
// engine, an http-mode listener) and the admin listener. It has no plugins
// and no auth, so the server runs goms.New's default interceptors only:
// recovery and the access log, whose records are at debug level and so
// left out by a logger at info. logger receives the server's records.
// benchLimit is the listeners' adaptive limit: on, at least 64 calls.
var benchLimit = goms.AdaptiveLimit{Min: 64}

func gomsConfig(host string, engine goms.Engine, logger *slog.Logger) goms.Config {
	return goms.Config{
		// The adaptive limit stays on, with its cost per call, but never
		// below the 50 callers of the largest case: a closed loop of
		// callers always has them all in flight, which the limit would
		// otherwise shed as a queue while the machine is busy.
		Listeners: []goms.Listener{
			{Name: listenerGRPC, Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeGRPC, Engine: engine, AdaptiveLimit: benchLimit},
			{Name: listenerHTTP, Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeHTTP, AdaptiveLimit: benchLimit},
		},
		Logger: logger,
		Admin:  goms.Admin{Addr: net.JoinHostPort(host, "0")},
	}
}

// serveGoms runs the goms server of gomsConfig with s's changes, its
// server records on stderr as text, until ctx ends. The example services
// are mounted as the examples mount them (app.Mount), GoMsService served
// by svc.
func serveGoms(ctx context.Context, svc *gomsservice.Service, host string, s gomsSetup, hello admin.Hello) error {
	cfg := gomsConfig(host, s.engine, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	cfg.Interceptors.Default = s.interceptors
	if s.configure != nil {
		cleanup, err := s.configure(ctx, &cfg, &hello)
		if err != nil {
			return err
		}
		defer func() { _ = cleanup(context.Background()) }()
	}
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	if err := app.Mount(srv, svc, nil, connect.WithGRPC()); err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	hello.Addrs = map[string]string{
		admin.EndpointGRPC: srv.Addr(listenerGRPC).String(),
		admin.EndpointHTTP: srv.Addr(listenerHTTP).String(),
	}
	if err := admin.Announce(hello); err != nil {
		return err
	}
	return srv.Serve(ctx)
}

// configureExample is the examples' own configuration, app.Configure:
// metrics, tracing (off unless the OTEL_* environment names an endpoint,
// which the harness removes), validation, a bearer token on the Delete
// methods, and an access log record per call (text, on stderr, which the
// harness sends to a file).
func configureExample(ctx context.Context, cfg *goms.Config, _ *admin.Hello) (cleanup func(context.Context) error, err error) {
	return app.Configure(ctx, cfg)
}

// configureObserved adds what a deployed service runs with to the default
// stack: Prometheus metrics, tracing on with sampling off (no span is
// recorded, so none is exported and no collector is needed), and the
// access log written, one JSON record per call, to a file of os.TempDir()
// through goms's buffered access file (Log.AccessFile), which it names in
// hello and removes on cleanup.
func configureObserved(ctx context.Context, cfg *goms.Config, hello *admin.Hello) (cleanup func(context.Context) error, err error) {
	metrics, err := prom.New()
	if err != nil {
		return nil, err
	}
	never := 0.0
	tr, err := tracing.New(ctx, tracing.Config{
		Enabled:     true,
		SampleRatio: &never,
		ServiceName: "bench",
		Endpoint:    "127.0.0.1:4318",
		Insecure:    true,
	})
	if err != nil {
		return nil, err
	}
	log, err := admin.CreateAppend(os.TempDir(), "goms-bench-access-*.log")
	if err == nil {
		err = log.Close()
	}
	if err != nil {
		return nil, errors.Join(err, tr.Shutdown(ctx))
	}
	cfg.Plugins = append(cfg.Plugins, metrics, tr)
	cfg.Log.AccessFile = log.Name()
	hello.AccessLog = log.Name()
	return func(ctx context.Context) error {
		return errors.Join(tr.Shutdown(ctx), os.Remove(log.Name()))
	}, nil
}
