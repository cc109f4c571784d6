package goms_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// TestGRPCGoClient calls the test services with grpc-go, whose HTTP/2
// client differs from net/http's, on both engines of a grpc-mode listener.
// The child service reaches its parent through srv.Client over gRPC, so
// the missing parent's NotFound comes back as FailedPrecondition.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{
		{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP},
		{Name: "grpcgo", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC},
		{Name: "gateway", Mode: goms.ModeGateway},
		{Name: "http", Mode: goms.ModeHTTP},
	}}, nil)
	for _, name := range []string{"grpc", "grpcgo", "gateway"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn := dialGRPC(t, srv.Addr(name))
			ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
			defer cancel()
			create := func(itemName string) (*gomsv1.Item, error) {
				res := new(gomsv1.CreateResponse)
				err := conn.Invoke(ctx, gomsv1connect.GoMsServiceCreateProcedure, &gomsv1.CreateRequest{Name: itemName}, res)
				return res.GetItem(), err
			}

			t.Run("unary", func(t *testing.T) {
				item, err := create(name + " grpc-go")
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				got := new(gomsv1.GetResponse)
				if err := conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: item.GetId()}, got); err != nil {
					t.Fatalf("Get: %v", err)
				}
				if diff := cmp.Diff(item, got.GetItem(), protocmp.Transform()); diff != "" {
					t.Errorf("Get differs from Create (-create +get):\n%s", diff)
				}
			})
			t.Run("not-found", func(t *testing.T) {
				err := conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: unknownID}, new(gomsv1.GetResponse))
				wantStatus(t, err, codes.NotFound)
			})
			t.Run("invalid-argument", func(t *testing.T) {
				_, err := create("")
				wantStatus(t, err, codes.InvalidArgument, "name")
			})
			t.Run("already-exists", func(t *testing.T) {
				if _, err := create(name + " twice"); err != nil {
					t.Fatalf("Create: %v", err)
				}
				_, err := create(name + " twice")
				wantStatus(t, err, codes.AlreadyExists)
			})
			t.Run("unknown-method", func(t *testing.T) {
				err := conn.Invoke(ctx, "/goms.v1.GoMsService/Nope", &gomsv1.GetRequest{}, new(gomsv1.GetResponse))
				wantStatus(t, err, codes.Unimplemented, "unknown procedure")
			})
			t.Run("server-stream", func(t *testing.T) {
				desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
				stream, err := conn.NewStream(ctx, desc, gomsv1connect.GoMsServiceWatchProcedure)
				if err != nil {
					t.Fatalf("Watch: %v", err)
				}
				if err := stream.SendMsg(&gomsv1.WatchRequest{}); err != nil {
					t.Fatalf("SendMsg: %v", err)
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatalf("CloseSend: %v", err)
				}
				recv := func() (*gomsv1.WatchResponse, error) {
					ev := new(gomsv1.WatchResponse)
					return ev, stream.RecvMsg(ev)
				}
				ev, item := gomstest.AwaitCreated(t, recv, create, name+" grpc-go watch")
				want := &gomsv1.WatchResponse{Type: gomsv1.ChangeType_CHANGE_TYPE_CREATED, Item: item}
				if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
					t.Errorf("event (-want +got):\n%s", diff)
				}
			})
			t.Run("client-stream", func(t *testing.T) {
				desc := &grpc.StreamDesc{StreamName: "CreateMany", ClientStreams: true}
				stream, err := conn.NewStream(ctx, desc, gomsv1connect.GoMsServiceCreateManyProcedure)
				if err != nil {
					t.Fatalf("CreateMany: %v", err)
				}
				for i := range 3 {
					if err := stream.SendMsg(&gomsv1.CreateManyRequest{Name: fmt.Sprintf("%s many %d", name, i)}); err != nil {
						t.Fatalf("SendMsg: %v", err)
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatalf("CloseSend: %v", err)
				}
				res := new(gomsv1.CreateManyResponse)
				if err := stream.RecvMsg(res); err != nil {
					t.Fatalf("RecvMsg: %v", err)
				}
				if got := len(res.GetItems()); got != 3 {
					t.Errorf("CreateMany stored %d items, want 3", got)
				}
			})
			t.Run("child", func(t *testing.T) {
				parent, err := create(name + " parent")
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				res := new(childv1.CreateResponse)
				req := &childv1.CreateRequest{ParentId: parent.GetId(), Name: "child"}
				if err := conn.Invoke(ctx, childv1connect.ChildServiceCreateProcedure, req, res); err != nil {
					t.Fatalf("child Create: %v", err)
				}
				if got := res.GetItem().GetParentId(); got != parent.GetId() {
					t.Errorf("parent_id %q, want %q", got, parent.GetId())
				}
				req = &childv1.CreateRequest{ParentId: unknownID, Name: "orphan"}
				err = conn.Invoke(ctx, childv1connect.ChildServiceCreateProcedure, req, new(childv1.CreateResponse))
				wantStatus(t, err, codes.FailedPrecondition, unknownID)
			})
		})
	}
	t.Run("http-rejects", func(t *testing.T) {
		t.Parallel()
		conn := dialGRPC(t, srv.Addr("http"))
		err := conn.Invoke(t.Context(), gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: unknownID}, new(gomsv1.GetResponse))
		wantStatus(t, err, codes.Unimplemented, `listener "http" (mode http)`, "does not accept gRPC requests")
	})
}

// TestGRPCGoClientLarge sends and receives messages larger than the HTTP/2
// frame and window sizes through grpc-go, so that flow control and message
// reassembly are exercised on both engines.
func TestGRPCGoClientLarge(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{
		{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP},
		{Name: "grpcgo", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC},
	}}, nil)
	for _, name := range []string{"grpc", "grpcgo"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn := dialGRPC(t, srv.Addr(name))
			big := strings.Repeat("x", 1<<20) + name // 1 MiB, under the 4 MiB default limit
			res := new(gomsv1.CreateResponse)
			if err := conn.Invoke(t.Context(), gomsv1connect.GoMsServiceCreateProcedure, &gomsv1.CreateRequest{Name: big}, res); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if res.GetItem().GetName() != big {
				t.Errorf("name came back with %d bytes, want %d", len(res.GetItem().GetName()), len(big))
			}
			tooBig := strings.Repeat("y", 5<<20)
			err := conn.Invoke(t.Context(), gomsv1connect.GoMsServiceCreateProcedure, &gomsv1.CreateRequest{Name: tooBig}, new(gomsv1.CreateResponse))
			wantStatus(t, err, codes.ResourceExhausted)
			// And the connection still serves.
			if err := conn.Invoke(t.Context(), gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: res.GetItem().GetId()}, new(gomsv1.GetResponse)); err != nil {
				t.Fatalf("Get after the refused message: %v", err)
			}
		})
	}
}
