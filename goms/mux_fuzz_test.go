package goms

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// FuzzCheckPath checks that checkPath never panics and sorts every path
// as Mount documents: "/" + a valid fully-qualified name + "/" is a
// service, any other path that starts with "/" and names something is
// plain, the rest is an error. A path it accepts, once mounted, routes
// request paths as the listener does: a plain path never serves RPCs; an
// unregistered service serves every path under it; a registered one
// serves exactly its methods.
func FuzzCheckPath(f *testing.F) {
	for _, c := range []struct{ path, request string }{
		{"/goms.v1.GoMsService/", "/goms.v1.GoMsService/Get"},
		{"/grpc.health.v1.Health/", "/grpc.health.v1.Health/Check"},
		{"/grpc.health.v1.Health/", "/grpc.health.v1.Health/Nope"},
		{"/Service/", "/Service/"},
		{"/metrics", "/metrics"},
		{"/debug/pprof/x", "/debug/pprof/x/"},
		{"/", ""},
		{"", "/"},
		{"/a/b/", "/a/b/c"},
		{"/1bad.Service/", "x/1bad.Service/"},
		{"/goms..v1/", "//"},
		{"/\xff/", "/\xff/x"},
		{"/google.protobuf.Timestamp/", "/google.protobuf.Timestamp/x"},
	} {
		f.Add(c.path, c.request)
	}
	handler := http.NotFoundHandler()
	f.Fuzz(func(t *testing.T, path, request string) {
		service, err := checkPath(path)
		name, isService := strings.CutSuffix(strings.TrimPrefix(path, "/"), "/")
		switch {
		case !strings.HasPrefix(path, "/") || path == "/":
			if err == nil {
				t.Fatalf("checkPath(%q) = %q, want an error", path, service)
			}
			return
		case !isService:
			if err != nil || service != "" {
				t.Fatalf("checkPath(%q) = %q, %v; want a plain path", path, service, err)
			}
		case strings.Contains(name, "/") || !protoreflect.FullName(name).IsValid():
			if err == nil {
				t.Fatalf("checkPath(%q) = %q, want an error", path, service)
			}
			return
		case err != nil || service != name:
			t.Fatalf("checkPath(%q) = %q, %v; want service %q", path, service, err, name)
		}

		r := newMux()
		r.add(path, service, handler)
		got := r.rpc(request) != nil
		var want bool
		desc, _ := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
		sd, registered := desc.(protoreflect.ServiceDescriptor)
		switch method, under := strings.CutPrefix(request, path); {
		case service == "":
			want = false
		case !registered:
			want = under
		default:
			want = under && sd.Methods().ByName(protoreflect.Name(method)) != nil
		}
		if got != want {
			t.Fatalf("with %q mounted, %q routes to it: %v, want %v", path, request, got, want)
		}
	})
}
