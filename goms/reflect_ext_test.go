//lint:file-ignore SA1019 grpc.reflection.v1alpha is deprecated, but goms serves it for older clients, so the test calls it.

package goms_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// builtinServices are the services goms adds to every listener that
// serves reflection.
var builtinServices = []string{
	"grpc.health.v1.Health",
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
}

func withBuiltins(services ...string) []string {
	all := append(slices.Clone(services), builtinServices...)
	slices.Sort(all)
	return all
}

// listServicesV1 lists the services of the listener conn reaches with
// grpc-go's grpc.reflection.v1 client.
func listServicesV1(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.CloseSend() }()
	req := &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{ListServices: "*"}}
	// A Send that fails with io.EOF leaves the status to Recv.
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names, nil
}

// listServicesV1Alpha is listServicesV1 with the v1alpha service, which
// grpcurl and older tools still call.
func listServicesV1Alpha(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.CloseSend() }()
	req := &reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{ListServices: "*"}}
	// A Send that fails with io.EOF leaves the status to Recv.
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names, nil
}

// listServicesConnect lists the services of a listener with connect-go's
// reflection client in the given protocol, for listeners grpc-go cannot
// reach.
func listServicesConnect(t *testing.T, url string, opts ...connect.ClientOption) ([]string, error) {
	stream := grpcreflect.NewClient(gomstest.H2C(t), url, opts...).NewStream(t.Context())
	defer func() { _, _ = stream.Close() }()
	names, err := stream.ListServices()
	if err != nil {
		return nil, err
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	slices.Sort(got)
	return got, nil
}

// TestReflection lists the services of each listener with the reflection
// clients of grpc-go (v1 and v1alpha) and connect-go.
func TestReflection(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, allModes(), nil)
	want := withBuiltins(gomsv1connect.GoMsServiceName, childv1connect.ChildServiceName)
	for _, name := range []string{"grpc", "grpcgo", "gateway"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn := dialGRPC(t, srv.Addr(name))
			for _, list := range []struct {
				version string
				f       func(context.Context, *grpc.ClientConn) ([]string, error)
			}{{"v1", listServicesV1}, {"v1alpha", listServicesV1Alpha}} {
				got, err := list.f(t.Context(), conn)
				if err != nil {
					t.Fatalf("%s ListServices: %v", list.version, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s services (-want +got):\n%s", list.version, diff)
				}
			}
		})
	}
	for _, c := range []struct {
		name, listener string
		opts           []connect.ClientOption
	}{
		{"http/grpcweb", "http", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"http/connect", "http", nil},
		{"gateway/connect", "gateway", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := listServicesConnect(t, srv.URL(c.listener), c.opts...)
			if err != nil {
				t.Fatalf("ListServices: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("describe", func(t *testing.T) {
		t.Parallel()
		stream := grpcreflect.NewClient(gomstest.H2C(t), srv.URL("gateway"), connect.WithGRPC()).NewStream(t.Context())
		defer func() { _, _ = stream.Close() }()
		files, err := stream.FileContainingSymbol(gomsv1connect.GoMsServiceName)
		if err != nil {
			t.Fatalf("FileContainingSymbol: %v", err)
		}
		if !slices.ContainsFunc(files, func(f *descriptorpb.FileDescriptorProto) bool {
			return f.GetPackage() == "goms.v1" && slices.ContainsFunc(f.GetService(), func(s *descriptorpb.ServiceDescriptorProto) bool {
				return s.GetName() == "GoMsService" && len(s.GetMethod()) == 8
			})
		}) {
			t.Errorf("no file describes goms.v1.GoMsService and its 8 methods among %d files", len(files))
		}
		if _, err := stream.FileContainingSymbol("nope.v1.Nope"); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("FileContainingSymbol of an unknown symbol: %v, want not_found", err)
		}
	})
}

// TestReflectionConfig checks the listeners that serve reflection and the
// services each lists, under Config.Reflection and MountOn.
func TestReflectionConfig(t *testing.T) {
	t.Parallel()
	gomsHandler := func(srv *goms.Server) error { return gomstest.MountTestServices(srv, connect.WithGRPC()) }
	cases := []struct {
		name       string
		reflection goms.Reflection
		mount      func(*goms.Server) error
		// want maps a listener to the services it lists, or to nil when
		// reflection is unimplemented there.
		want map[string][]string
	}{
		{
			name:       "disabled",
			reflection: goms.Reflection{Disabled: true},
			mount:      gomsHandler,
			want:       map[string][]string{"a": nil, "b": nil},
		},
		{
			name:       "limited",
			reflection: goms.Reflection{Listeners: []string{"a"}},
			mount:      gomsHandler,
			want: map[string][]string{
				"a": withBuiltins(gomsv1connect.GoMsServiceName, childv1connect.ChildServiceName),
				"b": nil,
			},
		},
		{
			name: "mount-on",
			mount: func(srv *goms.Server) error {
				if err := gomstest.MountTestServices(srv, connect.WithGRPC()); err != nil {
					return err
				}
				// A third service, on "b" only. Its descriptor is not
				// registered: reflection lists it all the same.
				return srv.MountOn([]string{"b"}, "/grpc.testing.Extra/", http.NotFoundHandler())
			},
			want: map[string][]string{
				"a": withBuiltins(gomsv1connect.GoMsServiceName, childv1connect.ChildServiceName),
				"b": withBuiltins(gomsv1connect.GoMsServiceName, childv1connect.ChildServiceName, "grpc.testing.Extra"),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := gomstest.Start(t, goms.Config{
				Listeners:  []goms.Listener{{Name: "a"}, {Name: "b", Mode: goms.ModeGRPC}},
				Reflection: c.reflection,
			}, c.mount)
			for listener, want := range c.want {
				conn := dialGRPC(t, srv.Addr(listener))
				got, err := listServicesV1(t.Context(), conn)
				if want == nil {
					wantStatus(t, err, codes.Unimplemented)
					continue
				}
				if err != nil {
					t.Fatalf("listener %q: ListServices: %v", listener, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("listener %q services (-want +got):\n%s", listener, diff)
				}
			}
		})
	}
}
