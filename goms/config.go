package goms

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
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

// on reports whether reflection is served on the named listener.
func (r Reflection) on(listener string) bool {
	return !r.Disabled && (len(r.Listeners) == 0 || slices.Contains(r.Listeners, listener))
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
	if c.Log.AccessBuffer < 0 {
		return c, fmt.Errorf("goms: log.access_buffer: %d is negative", c.Log.AccessBuffer)
	}
	if c.Log.AccessBuffer == 0 {
		c.Log.AccessBuffer = defaultAccessBuffer
	}
	rules := make(map[string]MethodConfig, len(c.Interceptors.Rules))
	for key, rule := range c.Interceptors.Rules {
		r, err := rule.check(key)
		if err != nil {
			return c, err
		}
		rules[key] = r
	}
	c.Interceptors.Rules = rules
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
