// Package setup is the goms server of the benchmark, with its default
// stack: the listeners and services of examples/gateway (examples/internal
// is not importable from bench/), on free ports, with goms.New's default
// interceptors only. The goms kinds of cmd/benchserver add their plugins
// to it; cmd/bench runs it in its own process to compare in-process calls
// with calls over loopback.
package setup

import (
	"errors"
	"log/slog"
	"net"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// Names of the listeners of Config.
const (
	// ListenerGRPC is the grpc-mode listener, where gRPC clients go.
	ListenerGRPC = "grpc"
	// ListenerHTTP is the http-mode listener, where Connect, gRPC-Web and
	// JSON clients go.
	ListenerHTTP = "http"
)

// Config returns the configuration of examples/gateway's listeners, each
// on a free port of host: a grpc-mode listener served by engine, an
// http-mode listener and the admin listener. It has no plugins and no
// auth, so the server runs goms.New's default interceptors only: recovery
// and the access log, whose records are at debug level and so left out by
// a logger at info. logger receives the server's records.
func Config(host string, engine goms.Engine, logger *slog.Logger) goms.Config {
	return goms.Config{
		Listeners: []goms.Listener{
			{Name: ListenerGRPC, Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeGRPC, Engine: engine},
			{Name: ListenerHTTP, Addr: net.JoinHostPort(host, "0"), Mode: goms.ModeHTTP},
		},
		Logger: logger,
		Admin:  goms.Admin{Addr: net.JoinHostPort(host, "0")},
	}
}

// Mount mounts GoMsService, served by svc, and ChildService, which reaches
// GoMsService through srv.Client over gRPC, on every listener of srv, both
// built with srv.HandlerOptions.
func Mount(srv *goms.Server, svc *gomsservice.Service) error {
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	return errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(childservice.New(parents), srv.HandlerOptions()...)),
	)
}
