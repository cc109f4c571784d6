package goms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ErrServerClosed is returned by Listen, Serve and Mount once a server has
// stopped: a Server is not reused.
var ErrServerClosed = errors.New("goms: server closed")

// errShuttingDown is the cause of the cancellation of calls still running
// when the grace period ends.
var errShuttingDown = errors.New("server is shutting down: retry the call on another replica or after restart")

// flushTimeout bounds the wait, after calls were cancelled, for their final
// statuses to reach the clients before connections are closed.
const flushTimeout = 2 * time.Second

// Server serves mounted connect handlers on its listeners. Create one with
// New, mount handlers, then call Serve. Its methods are safe to call
// concurrently.
type Server struct {
	// env is what the server's parts read of it: cfg, base, logger.
	env
	listeners   []*listener
	handlerOpts []connect.HandlerOption
	// edgeHandlerOpts are handlerOpts for the handlers of exposed remotes.
	edgeHandlerOpts []connect.HandlerOption
	clientOpts      []connect.ClientOption
	chains          *chains
	remotes         map[string]*remote // by service
	offered         map[string]bool    // services the program mounted or offered to
	stopRemotes     context.CancelFunc
	health          *grpchealth.StaticChecker
	ready           atomic.Bool
	// inProcess routes the in-process calls of Client by procedure path;
	// set by Listen.
	inProcess atomic.Pointer[map[string]inProcessRoute]
	// admissionLog reports the decisions of admission and rate limits.
	admissionLog *admissionLog
	// accessFile is where access records go when Log.AccessFile is set.
	accessFile *accessFile
	// status gathers the status page's data; nil unless the admin
	// listener serves it.
	status *statusBoard

	// cancelBase cancels env.base with errShuttingDown, which ends the
	// calls still running after the grace period.
	cancelBase context.CancelCauseFunc

	mu         sync.Mutex
	state      state
	builtins   bool
	mountErrs  []error
	userHealth map[string]grpchealth.Status
	// closing is done once Close is called; it cuts a drain short.
	closing       context.Context
	cancelClosing context.CancelFunc
}

type state uint8

const (
	stateNew state = iota
	stateListening
	stateServing
	stateShuttingDown
	stateClosed
)

// env is what the parts of a server (listeners, engines, remote and
// in-process clients) take from it when they are made. They read it, never
// the Server.
type env struct {
	// cfg is the server's configuration, with its defaults.
	cfg Config
	// base is the parent of every call's context; shutdown cancels it,
	// with errShuttingDown, when the grace period ends.
	base   context.Context
	logger *slog.Logger
}

// cutAtShutdown returns a context of parent that also ends, with the
// server's cause, when shutdown cancels the calls still running at the end
// of its grace period. Calls on net/http get that from their base context;
// in-process calls and the grpc engine's do not. Call cancel and stop once
// the call is over.
func (e env) cutAtShutdown(parent context.Context) (ctx context.Context, cancel context.CancelCauseFunc, stop func() bool) {
	ctx, cancel = context.WithCancelCause(parent)
	stop = context.AfterFunc(e.base, func() { cancel(context.Cause(e.base)) })
	return ctx, cancel, stop
}

// New checks cfg and returns a server that does not listen yet. Errors name
// the field at fault.
func New(cfg Config) (_ *Server, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancelCause(context.Background())
	s := &Server{
		env:        env{cfg: cfg, base: base, logger: cfg.Logger},
		health:     grpchealth.NewStaticChecker(),
		cancelBase: cancel,
		userHealth: make(map[string]grpchealth.Status),
	}
	s.closing, s.cancelClosing = context.WithCancel(context.Background())
	s.health.SetStatus("", grpchealth.StatusNotServing)
	s.admissionLog = newAdmissionLog(s.logger, cfg.Plugins)
	if cfg.Log.AccessFile != "" {
		f, err := openAccessFile(cfg.Log.AccessFile, cfg.Log.AccessBuffer, cfg.Log.accessLevel(), s.logger)
		if err != nil {
			return nil, err
		}
		s.accessFile = f
		f.start()
		defer func() {
			if err != nil {
				s.closeAccessFile()
			}
		}()
	}
	if cfg.Admin.Addr != "" && !cfg.Admin.DisableStatus {
		s.status = newStatusBoard(cfg.Plugins, s.admissionLog, &s.ready)
	}
	if s.chains, err = newChains(cfg, s.logger, s.admissionLog, s.accessFile); err != nil {
		return nil, err
	}
	dispatch := dispatchInterceptor{chains: s.chains, propagate: len(cfg.Propagate) > 0, log: s.admissionLog, status: s.status}
	s.handlerOpts = handlerOptions(cfg.MaxMessageBytes, dispatch)
	dispatch.edge = true
	s.edgeHandlerOpts = handlerOptions(cfg.MaxMessageBytes, dispatch)
	s.clientOpts = []connect.ClientOption{connect.WithInterceptors(s.chains.client...)}
	if err := s.addListeners(); err != nil {
		return nil, err
	}
	for _, name := range cfg.Reflection.Listeners {
		if s.listener(name) == nil {
			return nil, fmt.Errorf("goms: reflection.listeners: unknown listener %q (have %s)", name, s.listenerNames())
		}
	}
	s.offered = make(map[string]bool)
	if err := s.addRemotes(); err != nil {
		s.closeRemotes()
		return nil, err
	}
	if s.status != nil {
		s.status.listeners, s.status.remotes, s.status.config = s.listeners, s.remotes, cfg.Remotes
	}
	return s, nil
}

// addListeners makes the listeners of the configuration, the admin one
// last.
func (s *Server) addListeners() error {
	for _, lc := range s.cfg.Listeners {
		lc, tlsConfig, err := lc.check()
		if err != nil {
			return err
		}
		if s.listener(lc.Name) != nil {
			return fmt.Errorf("goms: listener %q: name used twice", lc.Name)
		}
		s.listeners = append(s.listeners, newListener(s.env, lc, tlsConfig, s.admissionLog))
	}
	if s.cfg.Admin.Addr == "" {
		return nil
	}
	lc, _, err := Listener{Name: adminListener, Addr: s.cfg.Admin.Addr}.check()
	if err != nil {
		return fmt.Errorf("goms: admin: %w", err)
	}
	if s.listener(adminListener) != nil {
		return fmt.Errorf("goms: listener %q: the name is reserved for the admin listener", adminListener)
	}
	l := newListener(s.env, lc, nil, s.admissionLog)
	l.admin = true
	s.listeners = append(s.listeners, l)
	return nil
}

// addRemotes makes the clients of Config.Remotes; each connects at its
// first call.
func (s *Server) addRemotes() error {
	s.remotes = make(map[string]*remote)
	names := make(map[string]bool)
	for _, rc := range s.cfg.Remotes {
		if names[rc.Name] {
			return fmt.Errorf("goms: remote %q: name used twice", rc.Name)
		}
		if _, dup := s.remotes[rc.Service]; dup {
			return fmt.Errorf("goms: remote %q: service %s already has a remote", rc.Name, rc.Service)
		}
		r, err := newRemote(s.env, rc)
		if err != nil {
			return err
		}
		names[rc.Name] = true
		s.remotes[rc.Service] = r
	}
	return nil
}

// HandlerOptions returns the connect handler options every handler mounted
// on s should be built with: the message size limit of
// Config.MaxMessageBytes, compressed requests bounded by it too,
// responses compressed only from 1 KiB (when the client accepts it: below
// that gzip costs more CPU than it saves bandwidth), the interceptors of
// the configuration, and the one that ends calls cut by shutdown with
// CodeUnavailable. Pass them to generated constructors, and append
// options of your own after them.
func (s *Server) HandlerOptions() []connect.HandlerOption {
	return slices.Clip(s.handlerOpts)
}

// handlerOptions are the options of HandlerOptions, around dispatch.
func handlerOptions(maxMessageBytes int, dispatch dispatchInterceptor) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(maxMessageBytes),
		boundedGzip(maxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithInterceptors(drainInterceptor{}, dispatch),
	}
}

// ClientOptions returns the connect client options for clients of other
// services: the client side of the plugins (metrics, tracing) and header
// propagation (the request id of the call being served, and the headers
// of Config.Propagate). Pass them to generated client constructors with
// the pair Client returns.
func (s *Server) ClientOptions() []connect.ClientOption {
	return slices.Clip(s.clientOpts)
}

// Client returns the HTTP client and base URL to call the named service
// (its fully-qualified protobuf name, such as gomsv1connect.GoMsServiceName)
// in the shape generated client constructors take:
//
//	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
//	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, srv.ClientOptions()...)
//
// A service mounted on this server is called in-process: no socket, no
// HTTP/2 framing, but the same handler, interceptors, deadlines and errors
// as a call over the network. A service of Config.Remotes is called through
// grpc-go's client, as Remote describes: health-checked endpoints, balanced
// by calls in flight, outlier detection, retries, hedging, deadlines and
// adaptive throttling. When no endpoint is reachable the call fails with
// CodeUnavailable, naming the service; so does a call to a service that is
// neither mounted nor remote. The client may be created before the service
// is mounted.
func (s *Server) Client(service string) (connect.HTTPClient, string) {
	if r, ok := s.remotes[service]; ok {
		return r, "http://" + service
	}
	return inProcessClient{env: s.env, service: service, route: s.inProcessRoute}, "http://" + service
}

// Remotes reports the state of the clients of Config.Remotes, in the order
// of the configuration.
func (s *Server) Remotes() []RemoteStatus {
	return remotesStatus(s.cfg.Remotes, s.remotes)
}

// Addr returns the address the named listener is bound to, or nil before
// Listen or for an unknown name. With port 0 in the configuration, it
// tells the port the system chose.
func (s *Server) Addr(listener string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.listener(listener)
	if l == nil || l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// SetHealth sets the status the grpc.health.v1 service reports for one
// service, or for the whole server when service is "" (which /readyz
// follows too). Mounted services are SERVING from the moment Serve runs
// unless set otherwise; once shutdown begins every status is NOT_SERVING
// and SetHealth has no effect.
func (s *Server) SetHealth(service string, status grpchealth.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userHealth[service] = status
	if s.state == stateServing {
		s.health.SetStatus(service, status)
	}
}

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

// Serve listens (unless Listen was called), serves every listener, and
// blocks until ctx ends or a listener fails. Then it shuts down:
//
//  1. /readyz answers 503 and every health status turns NOT_SERVING, and
//     the server goes on serving for Config.DrainDelay;
//  2. the listeners stop accepting, idle connections close, and HTTP/2
//     clients receive GOAWAY;
//  3. calls in flight get Config.ShutdownTimeout to finish;
//  4. calls still running then see their context cancelled, and those in
//     handlers built with HandlerOptions end with CodeUnavailable; their
//     responses get a moment to flush before connections are closed.
//
// Serve returns nil when ctx ended and the shutdown went through, or when
// Close stopped the server; the listener's error when one failed; and
// ErrServerClosed when the server was already closed.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st == stateNew {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if s.state != stateListening {
		defer s.mu.Unlock()
		if s.state == stateClosed || s.state == stateShuttingDown {
			return ErrServerClosed
		}
		return errors.New("goms: Serve called twice")
	}
	s.state = stateServing
	errc := make(chan error, len(s.listeners))
	for _, l := range s.listeners {
		go func() { errc <- l.serve() }()
		s.logger.Info("goms: listening", "listener", l.Name, "addr", l.ln.Addr().String(), "mode", string(l.Mode), "tls", l.tlsConfig != nil)
	}
	s.setServing()
	remotes, stopRemotes := context.WithCancel(context.Background())
	s.stopRemotes = stopRemotes
	for _, r := range s.remotes {
		go r.run(remotes)
	}
	if s.status != nil {
		s.status.run(s.base)
	}
	s.mu.Unlock()

	var err error
	select {
	case <-ctx.Done():
	case <-s.closing.Done():
	case err = <-errc:
		s.logger.Error("goms: listener failed", "err", err)
	}
	s.shutdown()
	return err
}

// setServing reports every mounted service SERVING, except those given
// another status through SetHealth. Called with s.mu held.
func (s *Server) setServing() {
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			s.health.SetStatus(name, grpchealth.StatusServing)
		}
	}
	s.health.SetStatus("", grpchealth.StatusServing)
	for name, st := range s.userHealth {
		s.health.SetStatus(name, st)
	}
	s.ready.Store(true)
}

// shutdown drains and stops every listener, as Serve documents. Close cuts
// it short.
func (s *Server) shutdown() {
	s.mu.Lock()
	if s.state == stateClosed || s.state == stateShuttingDown {
		s.mu.Unlock()
		return
	}
	s.state = stateShuttingDown
	s.ready.Store(false)
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			s.health.SetStatus(name, grpchealth.StatusNotServing)
		}
	}
	for name := range s.userHealth {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.health.SetStatus("", grpchealth.StatusNotServing)
	s.mu.Unlock()
	s.logger.Info("goms: shutting down", "grace", s.cfg.ShutdownTimeout)
	defer func() {
		s.mu.Lock()
		s.state = stateClosed
		s.mu.Unlock()
		// Outgoing connections close last: draining calls may use them.
		if s.stopRemotes != nil {
			s.stopRemotes()
		}
		s.closeAccessFile()
	}()

	if s.cfg.DrainDelay > 0 {
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-s.closing.Done():
		}
	}
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	stopGrace := context.AfterFunc(s.closing, cancel) // Close ends the grace period
	defer stopGrace()
	if s.shutdownAll(grace) {
		s.cancelBase(errShuttingDown)
		s.logger.Info("goms: stopped")
		return
	}
	// The grace period is over: end what still runs, let the statuses
	// flush, then close whatever is left.
	s.cancelBase(errShuttingDown)
	s.logger.Warn("goms: grace period over, cancelling the calls still running")
	flush, cancelFlush := context.WithTimeout(context.Background(), flushTimeout)
	defer cancelFlush()
	stopFlush := context.AfterFunc(s.closing, cancelFlush)
	defer stopFlush()
	if !s.shutdownAll(flush) {
		for _, l := range s.listeners {
			l.close()
		}
	}
	s.logger.Info("goms: stopped")
}

// shutdownAll shuts every listener down in parallel and reports whether
// all of them finished before ctx ended.
func (s *Server) shutdownAll(ctx context.Context) bool {
	var wg sync.WaitGroup
	done := make([]bool, len(s.listeners))
	for i, l := range s.listeners {
		wg.Go(func() { done[i] = l.shutdown(ctx) })
	}
	wg.Wait()
	for _, ok := range done {
		if !ok {
			return false
		}
	}
	return true
}

// Close stops the server at once: listeners and connections close and
// calls in flight fail. Serve, if running, returns nil, even when it is
// draining. Prefer cancelling Serve's context, which drains calls first.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	if prev == stateClosed {
		return nil
	}
	s.state = stateClosed
	s.ready.Store(false)
	s.cancelBase(errShuttingDown)
	s.cancelClosing()
	if s.stopRemotes != nil {
		s.stopRemotes()
	}
	s.closeRemotes()
	defer s.closeAccessFile()
	var errs []error
	for _, l := range s.listeners {
		if prev == stateServing || prev == stateShuttingDown {
			l.close()
		} else if l.ln != nil {
			errs = append(errs, l.ln.Close())
		}
	}
	return errors.Join(errs...)
}

// closeRemotes closes the clients of the remotes.
func (s *Server) closeRemotes() {
	for _, r := range s.remotes {
		r.close()
	}
}

// closeAccessFile writes out the access log file's buffer and closes it.
func (s *Server) closeAccessFile() {
	if s.accessFile == nil {
		return
	}
	if err := s.accessFile.close(); err != nil {
		s.logger.Error("goms: log.access_file: closing", "err", err)
	}
}

func (s *Server) listener(name string) *listener {
	for _, l := range s.listeners {
		if l.Name == name {
			return l
		}
	}
	return nil
}

func (s *Server) listenerNames() string {
	names := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		names[i] = fmt.Sprintf("%q", l.Name)
	}
	return strings.Join(names, ", ")
}
