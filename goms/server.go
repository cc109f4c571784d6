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
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// Defaults of the Config fields whose zero value means "the default".
const (
	defaultShutdownTimeout      = 10 * time.Second
	defaultReadHeaderTimeout    = 10 * time.Second
	defaultIdleTimeout          = 2 * time.Minute
	defaultMaxHeaderBytes       = 1 << 20
	defaultMaxMessageBytes      = 4 << 20
	defaultMaxConcurrentStreams = 250
)

// ErrServerClosed is returned by Listen, Serve and Mount once a server has
// stopped: a Server is not reused.
var ErrServerClosed = errors.New("goms: server closed")

// Config describes a server. Its zero value is valid but for Listeners,
// which needs at least one entry; every other field states its default.
type Config struct {
	// Listeners are the addresses the server listens on.
	Listeners []Listener `yaml:"listeners"`

	// DrainDelay is how long a stopping server goes on serving, with
	// /readyz at 503 and every health status NOT_SERVING, before its
	// listeners stop accepting: the time load balancers and Kubernetes
	// endpoints need to stop sending it new calls. Default 0.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// ShutdownTimeout is the grace period calls in flight get when the
	// server stops; calls still running then end with CodeUnavailable.
	// Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ReadHeaderTimeout bounds the time a client may take to send request
	// headers: a connection's first request's, the HTTP/2 preface
	// included, counted from the accept, then each HTTP/1.1 request's.
	// Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes connections that carried no request for that
	// long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds the size of request headers, HTTP/1.1 and
	// HTTP/2 alike; an HTTP/2 header block (HEADERS and CONTINUATION
	// frames) may hold it plus 16 KiB of encoded bytes before the
	// connection is closed. Default 1 MiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxMessageBytes bounds the size of one request message, after
	// decompression, in handlers built with HandlerOptions; larger
	// messages fail with CodeResourceExhausted. Default 4 MiB, as
	// grpc-go.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxConcurrentStreams bounds the calls in flight on one HTTP/2
	// connection. Default 250.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`

	// Services lists the services this process runs, by fully-qualified
	// name, of those the program mounts; Mount skips the others. Empty
	// means every service the program mounts. Naming one the program does
	// not mount is an error at Listen.
	Services []string `yaml:"services"`
	// Propagate names request headers (such as Authorization) that a
	// handler's calls to other services, through clients built with
	// ClientOptions, copy from the call it serves. The request id always
	// is; W3C trace context is the tracing plugin's.
	Propagate []string `yaml:"propagate"`
	// Remotes say where the services this process calls but does not
	// mount run; Server.Client reaches them over the network, and
	// listeners can expose them (Remote.Expose).
	Remotes []Remote `yaml:"remotes"`

	// Admin configures the admin listener (metrics, probes, pprof). Off
	// unless Admin.Addr is set.
	Admin Admin `yaml:"admin"`

	// Reflection configures gRPC server reflection, on by default on
	// every listener but the admin one.
	Reflection Reflection `yaml:"reflection"`

	// Interceptors selects the interceptors of each service and method.
	// By default every procedure gets every interceptor the server has,
	// but health and reflection calls stay out of the access log.
	Interceptors Interceptors `yaml:"interceptors"`
	// Plugins add interceptors, such as those of goms/prom and goms/tracing.
	Plugins []Plugin `yaml:"-"`
	// Auth configures the auth interceptor: who may call which
	// procedure, and how callers prove who they are. Off unless
	// Auth.Verifier, Auth.Default or Auth.Policies is set.
	Auth Auth `yaml:"auth"`

	// Log configures the logger goms makes when Logger is nil, and the
	// access log whatever the logger.
	Log Log `yaml:"log"`
	// Logger receives the server's own records (listening, stopping,
	// errors of the HTTP servers) and the access log. Default: a logger
	// on standard error as Log describes.
	Logger *slog.Logger `yaml:"-"`
}

// Reflection configures the grpc.reflection.v1 and v1alpha services, which
// let grpcurl and buf curl list and describe the mounted services.
type Reflection struct {
	// Disabled turns reflection off on every listener.
	Disabled bool `yaml:"disabled"`
	// Listeners, when not empty, limits reflection to the named listeners.
	Listeners []string `yaml:"listeners"`
}

// Server serves mounted connect handlers on its listeners. Create one with
// New, mount handlers, then call Serve. Its methods are safe to call
// concurrently.
type Server struct {
	cfg         Config
	logger      *slog.Logger
	listeners   []*listener
	handlerOpts []connect.HandlerOption
	// edgeHandlerOpts are handlerOpts for the handlers of exposed remotes.
	edgeHandlerOpts []connect.HandlerOption
	clientOpts      []connect.ClientOption
	chains          *chains
	remotes         map[string]*remote // by service
	offered         map[string]bool    // services the program mounted or offered to
	stopRemotes     context.CancelFunc
	auth            *authInterceptor // nil unless Config.Auth is on
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

	// base is the parent of every request context; cancelling it with
	// errShuttingDown ends the calls still running after the grace period.
	base       context.Context
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

// New checks cfg and returns a server that does not listen yet. Errors name
// the field at fault.
func New(cfg Config) (_ *Server, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancelCause(context.Background())
	s := &Server{
		cfg:        cfg,
		logger:     cfg.Logger,
		health:     grpchealth.NewStaticChecker(),
		base:       base,
		cancelBase: cancel,
		userHealth: make(map[string]grpchealth.Status),
	}
	s.closing, s.cancelClosing = context.WithCancel(context.Background())
	s.health.SetStatus("", grpchealth.StatusNotServing)
	s.admissionLog = newAdmissionLog(s.logger, cfg.Plugins)
	if cfg.Log.AccessFile != "" {
		if cfg.Log.AccessBuffer < 0 {
			return nil, fmt.Errorf("goms: log.access_buffer: %d is negative", cfg.Log.AccessBuffer)
		}
		if cfg.Log.AccessBuffer == 0 {
			cfg.Log.AccessBuffer = defaultAccessBuffer
		}
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
	if err := s.initInterceptors(); err != nil {
		return nil, err
	}
	for _, lc := range cfg.Listeners {
		lc, tlsConfig, err := lc.check()
		if err != nil {
			return nil, err
		}
		if s.listener(lc.Name) != nil {
			return nil, fmt.Errorf("goms: listener %q: name used twice", lc.Name)
		}
		s.listeners = append(s.listeners, newListener(s, lc, tlsConfig))
	}
	if cfg.Admin.Addr != "" {
		lc, _, err := Listener{Name: adminListener, Addr: cfg.Admin.Addr}.check()
		if err != nil {
			return nil, fmt.Errorf("goms: admin: %w", err)
		}
		if s.listener(adminListener) != nil {
			return nil, fmt.Errorf("goms: listener %q: the name is reserved for the admin listener", adminListener)
		}
		l := newListener(s, lc, nil)
		l.admin = true
		s.listeners = append(s.listeners, l)
		if !cfg.Admin.DisableStatus {
			s.status = newStatusBoard(s)
		}
	}
	s.remotes = make(map[string]*remote)
	s.offered = make(map[string]bool)
	names := make(map[string]bool)
	for _, rc := range cfg.Remotes {
		if names[rc.Name] {
			s.closeRemotes()
			return nil, fmt.Errorf("goms: remote %q: name used twice", rc.Name)
		}
		if _, dup := s.remotes[rc.Service]; dup {
			s.closeRemotes()
			return nil, fmt.Errorf("goms: remote %q: service %s already has a remote", rc.Name, rc.Service)
		}
		r, err := newRemote(s, rc)
		if err != nil {
			s.closeRemotes()
			return nil, err
		}
		names[rc.Name] = true
		s.remotes[rc.Service] = r
	}
	for _, name := range cfg.Reflection.Listeners {
		if s.listener(name) == nil {
			s.closeRemotes()
			return nil, fmt.Errorf("goms: reflection.listeners: unknown listener %q (have %s)", name, s.listenerNames())
		}
	}
	return s, nil
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Listeners) == 0 {
		return c, errors.New("goms: listeners: need at least one listener")
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"drain_delay", &c.DrainDelay, 0},
		{"shutdown_timeout", &c.ShutdownTimeout, defaultShutdownTimeout},
		{"read_header_timeout", &c.ReadHeaderTimeout, defaultReadHeaderTimeout},
		{"idle_timeout", &c.IdleTimeout, defaultIdleTimeout},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return c, fmt.Errorf("goms: %s: %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	sizes := []struct {
		name string
		v    *int
		def  int
	}{
		{"max_header_bytes", &c.MaxHeaderBytes, defaultMaxHeaderBytes},
		{"max_message_bytes", &c.MaxMessageBytes, defaultMaxMessageBytes},
		{"max_concurrent_streams", &c.MaxConcurrentStreams, defaultMaxConcurrentStreams},
	}
	for _, n := range sizes {
		if *n.v < 0 {
			return c, fmt.Errorf("goms: %s: %d is negative", n.name, *n.v)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	if c.Logger == nil {
		logger, err := c.Log.logger()
		if err != nil {
			return c, err
		}
		c.Logger = logger
	}
	c.Listeners = slices.Clone(c.Listeners)
	return c, nil
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
		// Exposed remotes first, so that reflection lists them.
		if err := s.exposeRemotes(); err != nil {
			return err
		}
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
		for _, name := range l.routes.names {
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
	}
	for _, l := range s.listeners {
		l.admission.resolve(l.routes.procedures)
	}
	s.buildInProcessRoutes()
	s.state = stateListening
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

// setServing reports every mounted service SERVING, except those given
// another status through SetHealth. Called with s.mu held.
func (s *Server) setServing() {
	for _, l := range s.listeners {
		for _, name := range l.routes.names {
			s.health.SetStatus(name, grpchealth.StatusServing)
		}
	}
	s.health.SetStatus("", grpchealth.StatusServing)
	for name, st := range s.userHealth {
		s.health.SetStatus(name, st)
	}
	s.ready.Store(true)
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
