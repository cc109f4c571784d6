package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"os"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/otel"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/goms/validate"
)

// serveGoms runs the setup of examples/gateway, which lives in
// examples/gateway/main.go and examples/internal/app (internal, so not
// importable from here: keep this copy in step with them). It differs
// only where the benchmark needs it to: every port is chosen free, the
// grpc listener runs engine, and interceptors, when not nil, replaces the
// default selection of interceptors.
func serveGoms(ctx context.Context, svc *gomsservice.Service, host string, engine goms.Engine, interceptors []string, hello admin.Hello) error {
	cfg := goms.Config{
		Listeners: []goms.Listener{
			{Name: "grpc", Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeGRPC, Engine: engine},
			{Name: "http", Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeHTTP},
		},
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Admin:        goms.Admin{Addr: net.JoinHostPort(host, "0")},
		Interceptors: goms.Interceptors{Default: interceptors},
	}
	shutdown, err := configure(ctx, &cfg)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	if err := errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(childservice.New(parents), srv.HandlerOptions()...)),
	); err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	hello.Addrs = map[string]string{
		admin.EndpointGRPC: srv.Addr("grpc").String(),
		admin.EndpointHTTP: srv.Addr("http").String(),
	}
	if err := admin.Announce(hello); err != nil {
		return err
	}
	return srv.Serve(ctx)
}

// tokenEnv is app.TokenEnv.
const tokenEnv = "GOMS_EXAMPLE_TOKEN"

// configure is app.Configure: metrics, tracing (off unless the OTEL_*
// environment names an endpoint), validation, and a bearer token on the
// Delete methods.
func configure(ctx context.Context, cfg *goms.Config) (shutdown func(context.Context) error, err error) {
	metrics, err := prom.New()
	if err != nil {
		return nil, err
	}
	tracing, err := otel.New(ctx, otel.Config{ServiceName: "goms-example"})
	if err != nil {
		return nil, err
	}
	cfg.Plugins = append(cfg.Plugins, metrics, tracing, validate.New())
	token := os.Getenv(tokenEnv)
	cfg.Auth = goms.Auth{
		Default: goms.PolicyPublic,
		Policies: map[string]goms.Policy{
			gomsv1connect.GoMsServiceName + "/Delete":   goms.PolicyAuthenticated,
			childv1connect.ChildServiceName + "/Delete": goms.PolicyAuthenticated,
		},
		Verifier: func(_ context.Context, c goms.Credentials) (goms.Identity, error) {
			if token == "" || subtle.ConstantTimeCompare([]byte(c.Bearer), []byte(token)) != 1 {
				return goms.Identity{}, errors.New("wrong token")
			}
			return goms.Identity{Subject: "example-admin"}, nil
		},
	}
	return tracing.Shutdown, nil
}
