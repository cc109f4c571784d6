// Package app wires the example services into a goms server, as every
// example does the same.
package app

import (
	"errors"
	"log/slog"
	"os"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// MountAll mounts GoMsService and ChildService on every listener of srv.
// ChildService reaches GoMsService through srv.Client, calling with the
// given client options (connect.WithGRPC() for a gRPC listener).
func MountAll(srv *goms.Server, clientOpts ...connect.ClientOption) error {
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, clientOpts...)
	return errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(gomsservice.New(), srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(childservice.New(parents), srv.HandlerOptions()...)),
	)
}

// Logger is the logger of the example programs: text records on stderr.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}
