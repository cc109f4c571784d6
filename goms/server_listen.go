package goms

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// What a Server serves where: Mount and MountOn record handlers, Listen
// binds the listeners and builds each one's mux with the built-in
// services, the in-process routes of Server.Client and the exposed
// remotes.

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
		builtin := builtinService(service)
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
		if l.mux.has(path) {
			return fmt.Errorf("goms: mount %q: already mounted on listener %q", path, l.Name)
		}
	}
	for _, l := range targets {
		l.mux.add(path, service, handler)
	}
	return nil
}

// Listen binds every listener, so that a port in use is reported before
// anything is served, and Addr tells the chosen ports. On error no
// listener stays open. Serve calls Listen when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateClosed:
		return ErrServerClosed
	case stateListening, stateServing, stateShuttingDown:
		return errors.New("goms: Listen called twice")
	}
	if err := errors.Join(s.mountErrs...); err != nil {
		return err
	}
	if !s.builtins {
		if err := s.addBuiltins(); err != nil {
			return err
		}
		s.builtins = true
	}
	if err := s.checkInterceptorRules(); err != nil {
		return err
	}
	for _, name := range s.cfg.Services {
		if r, ok := s.remotes[name]; ok {
			return fmt.Errorf("goms: services: %s is also remote %q; a service is local or remote, not both", name, r.Name)
		}
		if !s.offered[name] {
			return fmt.Errorf("goms: services: %s is not a service this program mounts", name)
		}
	}
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			if r, ok := s.remotes[name]; ok && !r.exposedOn(l.Name) {
				return fmt.Errorf("goms: remote %q: service %s is also mounted here; a service is local or remote, not both", r.Name, name)
			}
		}
	}
	for i, l := range s.listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, opened := range s.listeners[:i] {
				_ = opened.ln.Close()
				opened.ln = nil
			}
			return fmt.Errorf("goms: listener %q: %w", l.Name, err)
		}
		l.ln = countingListener{Listener: ln, open: &l.conns}
		addr := ln.Addr().String()
		l.bound.Store(&addr)
	}
	for _, l := range s.listeners {
		l.admission.resolve(l.mux.procedures)
	}
	s.buildInProcessRoutes()
	s.state = stateListening
	return nil
}

// checkInterceptorRules checks, once every mount is known, that the rules
// name mounted services and methods. Called with s.mu held.
func (s *Server) checkInterceptorRules() error {
	services := make(map[string]bool)
	procedures := make(map[string]bool)
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			services[name] = true
		}
		for p := range l.mux.procedures {
			procedures[p] = true
		}
	}
	// Services the program mounts but the configuration runs elsewhere
	// may still be named: one configuration serves every topology.
	for name := range s.offered {
		services[name] = true
		for _, p := range serviceProcedures(name) {
			procedures[p] = true
		}
	}
	return s.chains.checkRules(services, procedures)
}

// inProcessRoute returns the route of path for service, or false when no
// listener of s mounts the service.
func (s *Server) inProcessRoute(service, path string) (inProcessRoute, bool) {
	if table := s.inProcess.Load(); table != nil && servicePath(path, service) {
		if r, ok := (*table)[path]; ok {
			return r, true
		}
	}
	// Before Listen, a procedure the service does not have, or a service
	// whose descriptor is not registered.
	h := s.inProcessHandler(service, path)
	return inProcessRoute{h: h}, h != nil
}

// buildInProcessRoutes makes the table of in-process routes, once the
// mounts are final. Called with s.mu held.
func (s *Server) buildInProcessRoutes() {
	table := make(map[string]inProcessRoute)
	for _, l := range s.listeners {
		for path, h := range l.mux.procedures {
			service, method, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
			if _, seen := table[path]; seen || s.remotes[service] != nil {
				continue
			}
			r := inProcessRoute{h: h}
			desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service + "." + method))
			if md, ok := desc.(protoreflect.MethodDescriptor); err == nil && ok {
				r.unary = !md.IsStreamingClient() && !md.IsStreamingServer()
			}
			table[path] = r
		}
	}
	s.inProcess.Store(&table)
}

// inProcessHandler returns the handler that serves path for service, or
// nil when no listener of s mounts it.
func (s *Server) inProcessHandler(service, path string) http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if !slices.Contains(l.mux.names, service) {
			continue
		}
		if h := l.mux.rpc(path); h != nil {
			return h
		}
		return unknownProcedureHandler{listener: l.Name}
	}
	return nil
}

// addBuiltins mounts what goms serves besides the program's services,
// once all of those are known: the remote services exposed at the edge
// (first, so that reflection lists them); on every listener the probes and
// grpc.health.v1; on the admin listener its routes; reflection on the
// listeners Config.Reflection selects; the REST routes and the OpenAPI
// document and docs page of the listeners that ask for them.
func (s *Server) addBuiltins() error {
	if err := s.exposeRemotes(); err != nil {
		return err
	}
	healthPath, healthHandler := grpchealth.NewHandler(s.health, s.handlerOpts...)
	probes := probeRoutes(&s.ready, s.health)
	probes[healthPath] = healthHandler
	for _, l := range s.listeners {
		for path, h := range probes {
			if err := s.mountLocked([]string{l.Name}, path, h); err != nil {
				return err
			}
		}
		if l.admin {
			for path, h := range adminRoutes(s.status, s.cfg.Plugins, s.cfg.Admin.Pprof) {
				// Admin routes are plain paths, "/debug/pprof/" included.
				if l.mux.has(path) {
					return fmt.Errorf("goms: admin route %q: already mounted", path)
				}
				l.mux.add(path, "", h)
			}
			continue
		}
		if s.cfg.Reflection.on(l.Name) {
			for path, h := range reflectionHandlers(l.mux.names, s.handlerOpts) {
				if err := s.mountLocked([]string{l.Name}, path, h); err != nil {
					return err
				}
			}
		}
		if l.REST {
			rest, err := restHandler(l.Name, &l.mux, s.cfg.MaxMessageBytes)
			if err != nil {
				return err
			}
			l.rest = rest
		}
		if l.OpenAPI {
			routes, err := openAPIRoutes(l, s.chains, s.cfg.Auth)
			if err != nil {
				return err
			}
			for path, h := range routes {
				if l.mux.has(path) {
					return fmt.Errorf("goms: listener %q: openapi: %s is already mounted", l.Name, path)
				}
				l.mux.add(path, "", h)
			}
		}
	}
	return nil
}

// exposeRemotes mounts, on the listeners each remote names in Expose, a
// connect handler per method of the remote service that forwards its calls
// through the remote's client: the listener's protocol filter and
// interceptors apply as to a local service, and every protocol goes out as
// gRPC with the remote's balancing, health checks and deadlines. Called
// with s.mu held.
func (s *Server) exposeRemotes() error {
	for _, r := range s.remotes {
		if len(r.Expose) == 0 {
			continue
		}
		path, edge := "/"+r.Service+"/", r.edgeHandler(s.edgeHandlerOpts)
		for _, name := range r.Expose {
			l := s.listener(name)
			if l == nil {
				return fmt.Errorf("goms: remote %q: expose: unknown listener %q (have %s)", r.Name, name, s.listenerNames())
			}
			if l.mux.has(path) {
				return fmt.Errorf("goms: remote %q: expose: %s is already mounted on listener %q", r.Name, r.Service, name)
			}
			l.mux.add(path, r.Service, edge)
		}
	}
	return nil
}
