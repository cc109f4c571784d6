package gomstest_test

import (
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

func mountItems(srv *goms.Server) error {
	return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
}

// Every protocol reaches a gateway listener; a grpc-mode listener refuses
// the others in their own protocol; the cleanup stops the server.
func TestDialEveryProtocol(t *testing.T) {
	var ts *gomstest.Server
	t.Run("calls", func(t *testing.T) {
		ts = gomstest.Start(t, goms.Config{Listeners: []goms.Listener{
			{Name: "gateway"},
			{Name: "grpc", Mode: goms.ModeGRPC},
		}}, mountItems)
		ctx := t.Context()
		for _, p := range gomstest.Protocols {
			client := gomstest.Dial(t, ts, "", p, gomsv1connect.NewGoMsServiceClient)
			created, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: string(p)}))
			if err != nil {
				t.Fatalf("%s: Create: %v", p, err)
			}
			got, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}))
			if err != nil || got.Msg.GetItem().GetName() != string(p) {
				t.Fatalf("%s: Get = %v, %v", p, got, err)
			}
			_, err = gomstest.Dial(t, ts, "grpc", p, gomsv1connect.NewGoMsServiceClient).
				List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
			if p == gomstest.GRPC {
				if err != nil {
					t.Fatalf("gRPC on the grpc listener: %v", err)
				}
				continue
			}
			gomstest.WantError(t, err, connect.CodeUnimplemented, `listener "grpc" (mode grpc)`)
		}
		inproc := gomstest.InProcess(ts, gomsv1connect.GoMsServiceName, gomsv1connect.NewGoMsServiceClient)
		list, err := inproc.List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
		if err != nil || len(list.Msg.GetItems()) != len(gomstest.Protocols) {
			t.Fatalf("in-process List = %v, %v; want %d items", list, err, len(gomstest.Protocols))
		}
		_, err = inproc.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
		gomstest.WantError(t, err, connect.CodeNotFound)
	})
	select {
	case <-ts.Done():
	default:
		t.Fatal("the server still serves after its test's cleanup")
	}
}

// New gives a configuration without listeners one gateway listener.
func TestNewDefaults(t *testing.T) {
	srv := gomstest.New(t, goms.Config{})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.Addr(gomstest.DefaultListener) == nil {
		t.Fatalf("no listener %q", gomstest.DefaultListener)
	}
}
