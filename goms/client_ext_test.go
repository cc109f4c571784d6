package goms_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// TestClient calls a mounted service through srv.Client in every protocol,
// unary and streaming.
func TestClient(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{
		{Name: "grpc", Mode: goms.ModeGRPC},
		{Name: "http", Mode: goms.ModeHTTP},
	}}, nil)
	httpClient, baseURL := srv.Server.Client(gomsv1connect.GoMsServiceName)
	for _, c := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"connect-proto", nil},
		{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"connect-get", []connect.ClientOption{connect.WithHTTPGet()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			client := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, c.opts...)
			ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
			defer cancel()
			created, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "client " + c.name}))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			got, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}))
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if diff := cmp.Diff(created.Msg.GetItem(), got.Msg.GetItem(), protocmp.Transform()); diff != "" {
				t.Errorf("Get differs from Create (-create +get):\n%s", diff)
			}
			// Streams go through the same client.
			stream := client.Lookup(ctx)
			if err := stream.Send(&gomsv1.LookupRequest{Id: created.Msg.GetItem().GetId()}); err != nil {
				t.Fatalf("Lookup Send: %v", err)
			}
			res, err := stream.Receive()
			if err != nil {
				t.Fatalf("Lookup Receive: %v", err)
			}
			if res.GetItem().GetName() != "client "+c.name {
				t.Errorf("Lookup returned %v", res)
			}
			_ = stream.CloseRequest()
			_ = stream.CloseResponse()
		})
	}
	t.Run("child-over-connect", func(t *testing.T) {
		t.Parallel()
		// From outside, over Connect on the http listener; the child then
		// calls its parent through srv.Client over gRPC.
		parents := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("http"))
		parent, err := parents.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "client parent"}))
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		children := childv1connect.NewChildServiceClient(gomstest.H2C(t), srv.URL("http"))
		if _, err := children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: parent.Msg.GetItem().GetId(), Name: "c"})); err != nil {
			t.Fatalf("child Create: %v", err)
		}
		_, err = children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: unknownID, Name: "c"}))
		gomstest.WantError(t, err, connect.CodeFailedPrecondition, unknownID)
	})
	t.Run("unmounted-service", func(t *testing.T) {
		t.Parallel()
		httpClient, baseURL := srv.Server.Client("nope.v1.NopeService")
		client := connect.NewClient[gomsv1.GetRequest, gomsv1.GetResponse](httpClient, baseURL+"/nope.v1.NopeService/Get", connect.WithGRPC())
		_, err := client.CallUnary(t.Context(), connect.NewRequest(&gomsv1.GetRequest{}))
		gomstest.WantError(t, err, connect.CodeUnavailable, "nope.v1.NopeService", "not mounted")
	})
}

// TestClientLifecycle checks srv.Client over the server's life: a client
// made before the service is mounted works once it is, calls carry the
// caller's deadline, and after shutdown they fail with CodeUnavailable,
// the code callers retry elsewhere.
func TestClientLifecycle(t *testing.T) {
	t.Parallel()
	srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}})
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	if err := gomstest.MountTestServices(srv, connect.WithGRPC()); err != nil {
		t.Fatal(err)
	}
	running := gomstest.Serve(t, srv)
	if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
		t.Fatalf("List: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	stream, err := client.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	gomstest.WantError(t, err, connect.CodeDeadlineExceeded)

	running.Stop()
	if err := running.Wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_, err = client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{}))
	gomstest.WantError(t, err, connect.CodeUnavailable)
}

// probeService answers Get from its context: whether the caller's value
// reached it and how far its deadline is; an id of "panic" panics and one
// of "block" waits for the context to end.
type probeService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	started chan struct{}
}

type callerKey struct{}

func (p *probeService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	switch req.Msg.GetId() {
	case "panic":
		panic("probe panicked")
	case "block":
		close(p.started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	name := "no value"
	if ctx.Value(callerKey{}) != nil {
		name = "caller's value"
	}
	if deadline, ok := ctx.Deadline(); ok {
		name += fmt.Sprintf(", deadline in %s", time.Until(deadline).Round(time.Minute))
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Name: name}}), nil
}

// TestClientUnaryContext checks the context of unary in-process calls,
// which run on the caller's goroutine: the caller's deadline and
// cancellation reach the handler, its values do not, a panic is an
// internal error, and shutdown cuts a call still running at the end of
// the grace period.
func TestClientUnaryContext(t *testing.T) {
	t.Parallel()
	probe := &probeService{started: make(chan struct{})}
	srv := gomstest.Start(t, goms.Config{
		Listeners:       []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}},
		ShutdownTimeout: 100 * time.Millisecond,
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(probe, srv.HandlerOptions()...))
	})
	httpClient, baseURL := srv.Server.Client(gomsv1connect.GoMsServiceName)
	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
		client := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, opt)
		ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), callerKey{}, "secret"), time.Hour)
		res, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "probe"}))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Msg.GetItem().GetName(), "no value, deadline in 1h0m0s"; got != want {
			t.Errorf("handler saw %q, want %q", got, want)
		}
		_, err = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "panic"}))
		gomstest.WantError(t, err, connect.CodeInternal)

		ctx, cancel = context.WithCancel(t.Context())
		probe.started = make(chan struct{})
		started := probe.started
		go func() { <-started; cancel() }() // once the handler waits on its context
		_, err = client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "block"}))
		gomstest.WantError(t, err, connect.CodeCanceled)
	}

	client := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	probe.started = make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := client.Get(context.Background(), connect.NewRequest(&gomsv1.GetRequest{Id: "block"}))
		errc <- err
	}()
	<-probe.started
	srv.Stop()
	select {
	case err := <-errc:
		gomstest.WantError(t, err, connect.CodeUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not cut an in-process call after its grace period")
	}
	if err := srv.Wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
