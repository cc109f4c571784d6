// Package app wires the example services into a goms server, as every
// example does the same; the benchmark server (bench/cmd/benchserver)
// runs the same wiring.
package app

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"os"
	"strings"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/goms/tracing"
	"github.com/reversTeam/go-ms/goms/validate"
)

// MountAll mounts GoMsService and ChildService on every listener of srv.
// ChildService reaches GoMsService through srv.Client, with the client
// side of srv's plugins (srv.ClientOptions) and the given client options
// (connect.WithGRPC() for a gRPC listener).
func MountAll(srv *goms.Server, clientOpts ...connect.ClientOption) error {
	return Mount(srv, gomsservice.New(), nil, clientOpts...)
}

// MountOn is MountAll restricted to the named listeners; no names means
// every listener.
func MountOn(srv *goms.Server, listeners []string, clientOpts ...connect.ClientOption) error {
	return Mount(srv, gomsservice.New(), listeners, clientOpts...)
}

// Mount is MountOn serving items as GoMsService, for a program that fills
// it before serving, as the benchmark server (bench/cmd/benchserver) does.
func Mount(srv *goms.Server, items *gomsservice.Service, listeners []string, clientOpts ...connect.ClientOption) error {
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, append(srv.ClientOptions(), clientOpts...)...)
	gomsPath, gomsHandler := gomsv1connect.NewGoMsServiceHandler(items, srv.HandlerOptions()...)
	childPath, childHandler := childv1connect.NewChildServiceHandler(childservice.New(parents), srv.HandlerOptions()...)
	return errors.Join(
		srv.MountOn(listeners, gomsPath, gomsHandler),
		srv.MountOn(listeners, childPath, childHandler),
	)
}

// Logger is the logger of the example programs: text records on stderr.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// TokenEnv names the environment variable that holds the bearer token the
// Delete methods of both services require. Unset, nobody can delete.
const TokenEnv = "EXAMPLE_API_TOKEN"

// Configure adds to cfg what every example runs with: Prometheus metrics
// (served under /metrics when cfg.Admin.Addr is set), OpenTelemetry
// tracing (off unless the OTEL_* environment names an endpoint),
// protovalidate validation, and a bearer token (from TokenEnv) on the
// Delete methods, every other method staying public. Call the returned
// function once Serve has returned: it flushes the last spans.
func Configure(ctx context.Context, cfg *goms.Config) (shutdown func(context.Context) error, err error) {
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
	token := os.Getenv(TokenEnv)
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

// ObserveRemotes adds the state of srv's remote services to the metrics
// plugin that Configure put in cfg.
func ObserveRemotes(cfg goms.Config, srv *goms.Server) error {
	for _, p := range cfg.Plugins {
		if m, ok := p.(*prom.Metrics); ok {
			return m.ObserveRemotes(srv)
		}
	}
	return nil
}

// SetFlags collects repeated -set key=value flags, the overrides the
// example programs pass to goms.LoadConfig.
type SetFlags []string

// String implements flag.Value.
func (s *SetFlags) String() string { return strings.Join(*s, ", ") }

// Set implements flag.Value.
func (s *SetFlags) Set(v string) error { *s = append(*s, v); return nil }
