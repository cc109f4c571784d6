package goms

import (
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// checkPath returns the service name of an RPC service path
// ("/pkg.Service/"), or "" for a plain HTTP path.
func checkPath(path string) (string, error) {
	if !strings.HasPrefix(path, "/") || path == "/" {
		return "", fmt.Errorf(`path must start with "/" and name something`)
	}
	if !strings.HasSuffix(path, "/") {
		return "", nil
	}
	name := path[1 : len(path)-1]
	if strings.Contains(name, "/") || !protoreflect.FullName(name).IsValid() {
		return "", fmt.Errorf(`a service path is "/" + a fully-qualified protobuf service name + "/"`)
	}
	return name, nil
}

// routes is one listener's routing table. It is written only before the
// server listens and read without locks afterwards.
type mux struct {
	// plain holds exact non-RPC paths, served to any protocol.
	plain map[string]http.Handler
	// procedures holds the exact paths of every method of the mounted
	// services whose descriptors are registered.
	procedures map[string]http.Handler
	// services holds service paths ("/pkg.Service/"), for services whose
	// descriptors are not registered and so whose methods are unknown.
	services map[string]http.Handler
	// names lists the mounted services in mount order.
	names []string
	// paths lists every mounted path, to refuse duplicates.
	paths map[string]bool
}

func newMux() mux {
	return mux{
		plain:      make(map[string]http.Handler),
		procedures: make(map[string]http.Handler),
		services:   make(map[string]http.Handler),
		paths:      make(map[string]bool),
	}
}

func (m *mux) has(path string) bool { return m.paths[path] }

func (m *mux) add(path, service string, h http.Handler) {
	m.paths[path] = true
	if service == "" {
		m.plain[path] = h
		return
	}
	m.names = append(m.names, service)
	procedures := serviceProcedures(service)
	if procedures == nil {
		m.services[path] = h
		return
	}
	for _, p := range procedures {
		m.procedures[p] = h
	}
}

// serviceProcedures returns the paths of a service's methods
// ("/pkg.Service/Method"), or nil when its descriptor is not registered.
func serviceProcedures(service string) []string {
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return nil
	}
	methods := sd.Methods()
	out := make([]string, methods.Len())
	for i := range methods.Len() {
		out[i] = "/" + service + "/" + string(methods.Get(i).Name())
	}
	return out
}

// rpc returns the handler of an RPC path, or nil.
func (m *mux) rpc(path string) http.Handler {
	if h, ok := m.procedures[path]; ok {
		return h
	}
	if len(m.services) == 0 {
		return nil
	}
	// "/pkg.Service/Method" -> "/pkg.Service/"
	if i := strings.IndexByte(path[min(1, len(path)):], '/'); i >= 0 {
		return m.services[path[:i+2]]
	}
	return nil
}

// httpRules returns the descriptor and handler of a mounted service when
// at least one of its methods has a google.api.http rule, and nil
// otherwise.
func (m *mux) httpRules(service string) (protoreflect.ServiceDescriptor, http.Handler) {
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return nil, nil
	}
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		if proto.HasExtension(md.Options(), annotations.E_Http) {
			return sd, m.procedures["/"+service+"/"+string(md.Name())]
		}
	}
	return nil, nil
}

// notFoundWriter sends the Connect unary error of an unknown procedure
// with 404, the status of a path nobody serves and the one the Connect
// protocol asks for, instead of the 501 of CodeUnimplemented; the body
// still says unimplemented. gRPC, gRPC-Web and Connect streaming errors
// are sent with 200 and keep their code.
type notFoundWriter struct{ http.ResponseWriter }

func (w notFoundWriter) WriteHeader(code int) {
	if code == http.StatusNotImplemented {
		code = http.StatusNotFound
	}
	w.ResponseWriter.WriteHeader(code)
}
