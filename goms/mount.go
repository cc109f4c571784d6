package goms

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Mount serves handler under path on every listener. It takes the pair a
// protoc-gen-connect-go constructor returns:
//
//	srv.Mount(gomsv1connect.NewGoMsServiceHandler(impl, srv.HandlerOptions()...))
//
// A path of the form "/package.Service/" mounts an RPC service: its
// requests go through the listener's protocol filter, it is listed by
// server reflection and reported by health checks. Any other path, such as
// "/metrics", is an exact plain HTTP route that every protocol reaches.
//
// A service that Config.Services does not list (when set), or that
// Config.Remotes says runs elsewhere, is not mounted and Mount returns nil:
// a program mounts every service it has, and its configuration chooses
// which ones run in this process.
//
// Mount returns an error, which Listen and Serve also return, when the
// path is malformed or already mounted, or when the server already
// listens.
func (s *Server) Mount(path string, handler http.Handler) error {
	return s.MountOn(nil, path, handler)
}

// MountOn is Mount restricted to the named listeners; no names means every
// listener. Naming a listener the server does not have is an error.
func (s *Server) MountOn(listeners []string, path string, handler http.Handler) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.mountLocked(listeners, path, handler)
	if err != nil {
		s.mountErrs = append(s.mountErrs, err)
	}
	return err
}

func (s *Server) mountLocked(names []string, path string, handler http.Handler) error {
	if s.state == stateClosed || s.state == stateShuttingDown {
		return fmt.Errorf("goms: mount %q: %w", path, ErrServerClosed)
	}
	if s.state != stateNew {
		return fmt.Errorf("goms: mount %q: the server already listens; mount before Listen or Serve", path)
	}
	if handler == nil {
		return fmt.Errorf("goms: mount %q: nil handler", path)
	}
	service, err := checkPath(path)
	if err != nil {
		return fmt.Errorf("goms: mount %q: %w", path, err)
	}
	if service != "" {
		s.offered[service] = true
		// goms's own services (health, reflection) always run.
		builtin := slices.Contains(quietServices, service)
		if !builtin && (len(s.cfg.Services) > 0 && !slices.Contains(s.cfg.Services, service) || s.remotes[service] != nil) {
			s.logger.Debug("goms: not running a service the configuration leaves out or says is remote", "service", service)
			return nil
		}
	}
	var targets []*listener
	for _, l := range s.listeners {
		if !l.admin {
			targets = append(targets, l)
		}
	}
	if len(names) > 0 {
		targets = make([]*listener, 0, len(names))
		for _, name := range names {
			l := s.listener(name)
			if l == nil {
				return fmt.Errorf("goms: mount %q: unknown listener %q (have %s)", path, name, s.listenerNames())
			}
			targets = append(targets, l)
		}
	}
	for _, l := range targets {
		if l.routes.has(path) {
			return fmt.Errorf("goms: mount %q: already mounted on listener %q", path, l.Name)
		}
	}
	for _, l := range targets {
		l.routes.add(path, service, handler)
	}
	return nil
}

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
type routes struct {
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

func newRoutes() routes {
	return routes{
		plain:      make(map[string]http.Handler),
		procedures: make(map[string]http.Handler),
		services:   make(map[string]http.Handler),
		paths:      make(map[string]bool),
	}
}

func (r *routes) has(path string) bool { return r.paths[path] }

func (r *routes) add(path, service string, h http.Handler) {
	r.paths[path] = true
	if service == "" {
		r.plain[path] = h
		return
	}
	r.names = append(r.names, service)
	procedures := serviceProcedures(service)
	if procedures == nil {
		r.services[path] = h
		return
	}
	for _, p := range procedures {
		r.procedures[p] = h
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
func (r *routes) rpc(path string) http.Handler {
	if h, ok := r.procedures[path]; ok {
		return h
	}
	if len(r.services) == 0 {
		return nil
	}
	// "/pkg.Service/Method" -> "/pkg.Service/"
	if i := strings.IndexByte(path[min(1, len(path)):], '/'); i >= 0 {
		return r.services[path[:i+2]]
	}
	return nil
}
