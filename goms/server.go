package goms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// ErrServerClosed is returned by Listen, Serve and Mount once a server has
// stopped: a Server is not reused.
var ErrServerClosed = errors.New("goms: server closed")

// errShuttingDown is the cause of the cancellation of calls still running
// when the grace period ends.
var errShuttingDown = errors.New("server is shutting down: retry the call on another replica or after restart")

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
