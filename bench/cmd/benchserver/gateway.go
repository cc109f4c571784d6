package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"os"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/bench/internal/setup"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/goms/tracing"
	"github.com/reversTeam/go-ms/goms/validate"
)

// gomsSetup is how one goms kind departs from the default stack of
// setup.Config.
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

// serveGoms runs the goms server of setup.Config with s's changes, its
// server records on stderr as text, until ctx ends.
func serveGoms(ctx context.Context, svc *gomsservice.Service, host string, s gomsSetup, hello admin.Hello) error {
	cfg := setup.Config(host, s.engine, slog.New(slog.NewTextHandler(os.Stderr, nil)))
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
	if err := setup.Mount(srv, svc); err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	hello.Addrs = map[string]string{
		admin.EndpointGRPC: srv.Addr(setup.ListenerGRPC).String(),
		admin.EndpointHTTP: srv.Addr(setup.ListenerHTTP).String(),
	}
	if err := admin.Announce(hello); err != nil {
		return err
	}
	return srv.Serve(ctx)
}

// tokenEnv is app.TokenEnv.
const tokenEnv = "GOMS_EXAMPLE_TOKEN"

// configureExample is app.Configure of examples/internal/app (internal, so
// not importable from here: keep this copy in step with it): metrics,
// tracing (off unless the OTEL_* environment names an endpoint, which the
// harness removes), validation, a bearer token on the Delete methods, and
// an access log record per call (text, on stderr, which the harness sends
// to a file).
func configureExample(ctx context.Context, cfg *goms.Config, _ *admin.Hello) (cleanup func(context.Context) error, err error) {
	metrics, err := prom.New()
	if err != nil {
		return nil, err
	}
	tr, err := tracing.New(ctx, tracing.Config{ServiceName: "goms-example"})
	if err != nil {
		return nil, err
	}
	cfg.Plugins = append(cfg.Plugins, metrics, tr, validate.New())
	// The examples log every call; goms's default keeps access records at
	// debug.
	info := slog.LevelInfo
	cfg.Log.AccessLevel = &info
	token := os.Getenv(tokenEnv)
	cfg.Auth = goms.Auth{
		Default: "public",
		Policies: map[string]string{
			gomsv1connect.GoMsServiceName + "/Delete":   "authenticated",
			childv1connect.ChildServiceName + "/Delete": "authenticated",
		},
		Verifier: func(_ context.Context, c goms.Credentials) (goms.Identity, error) {
			if token == "" || subtle.ConstantTimeCompare([]byte(c.Bearer), []byte(token)) != 1 {
				return goms.Identity{}, errors.New("wrong token")
			}
			return goms.Identity{Subject: "example-admin"}, nil
		},
	}
	return tr.Shutdown, nil
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
