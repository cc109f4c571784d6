package goms_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// headerEcho answers Get with the request id, X-Tenant and X-Other it
// received.
type headerEcho struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func (headerEcho) Get(_ context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	name := req.Header().Get(goms.RequestIDHeader) + "|" + req.Header().Get("X-Tenant") + "|" + req.Header().Get("X-Other")
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId(), Name: name}}), nil
}

// frontService answers child Get by calling goms Get, returning what the
// goms side saw.
type frontService struct {
	childv1connect.UnimplementedChildServiceHandler
	parents gomsv1connect.GoMsServiceClient
}

func (f frontService) Get(ctx context.Context, req *connect.Request[childv1.GetRequest]) (*connect.Response[childv1.GetResponse], error) {
	res, err := f.parents.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: req.Msg.GetId()}))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.GetResponse{Item: &childv1.Item{Name: res.Msg.GetItem().GetName()}}), nil
}

// TestPropagate checks that a handler's calls to another service carry the
// request id of the call it serves and the headers Config.Propagate names,
// and no other header, whether that service runs in-process or remotely.
func TestPropagate(t *testing.T) {
	t.Parallel()
	mountFront := func(srv *goms.Server) error {
		hc, url := srv.Client(gomsv1connect.GoMsServiceName)
		parents := gomsv1connect.NewGoMsServiceClient(hc, url, append(srv.ClientOptions(), connect.WithGRPC())...)
		return srv.Mount(childv1connect.NewChildServiceHandler(frontService{parents: parents}, srv.HandlerOptions()...))
	}
	backend := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(headerEcho{}, srv.HandlerOptions()...))
	})
	remote := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Propagate: []string{"X-Tenant"},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{backend.Addr("grpc")}}},
	}, mountFront)
	local := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, Propagate: []string{"X-Tenant"}}, func(srv *goms.Server) error {
		if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(headerEcho{}, srv.HandlerOptions()...)); err != nil {
			return err
		}
		return mountFront(srv)
	})
	for _, c := range []struct {
		name string
		run  *gomstest.Running
	}{{"remote", remote}, {"in-process", local}} {
		t.Run(c.name, func(t *testing.T) {
			client := childv1connect.NewChildServiceClient(gomstest.H2C(t), c.run.URL("gateway"))
			req := connect.NewRequest(&childv1.GetRequest{Id: "0123456789abcdef"})
			req.Header().Set(goms.RequestIDHeader, "req-"+c.name)
			req.Header().Set("X-Tenant", "acme")
			req.Header().Set("X-Other", "not propagated")
			res, err := client.Get(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Msg.GetItem().GetName(), "req-"+c.name+"|acme|"; got != want {
				t.Errorf("the goms call saw %q, want %q", got, want)
			}
		})
	}
}
