package goms

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
)

// Names of the interceptors goms knows, in the order they run, outermost
// first (see Interceptors).
const (
	interceptorTracing   = "tracing"
	interceptorMetrics   = "metrics"
	interceptorAccessLog = "accesslog"
	interceptorRecovery  = "recovery"
	interceptorAuth      = "auth"
	// interceptorRateLimit applies the rate limits of Interceptors.Rules.
	// It runs on every procedure a rule gives a rate limit, whatever
	// Default and the rules select.
	interceptorRateLimit = "ratelimit"
	interceptorValidate  = "validate"
)

var interceptorOrder = []string{
	interceptorTracing, interceptorMetrics, interceptorAccessLog,
	interceptorRecovery, interceptorAuth, interceptorRateLimit, interceptorValidate,
}

// Plugin adds a named interceptor to a server, such as the metrics of
// goms/prom or the tracing of goms/tracing. Plugins live in their own packages
// so that a program pays for their dependencies only when it uses them.
type Plugin interface {
	// Name is how configuration selects the plugin's interceptor. The
	// names Interceptors lists have a fixed place in the chain; other
	// names run after them, in Config.Plugins order.
	Name() string
	// Interceptor is applied to the calls the server handles.
	Interceptor() connect.Interceptor
}

// ClientPlugin is a Plugin that also instruments the calls of the clients
// the server provides (Server.ClientOptions).
type ClientPlugin interface {
	Plugin
	ClientInterceptor() connect.Interceptor
}

// AdminPlugin is a Plugin that serves HTTP routes on the admin listener,
// such as /metrics.
type AdminPlugin interface {
	Plugin
	AdminRoutes() map[string]http.Handler
}

// Interceptors selects the interceptors of each procedure by name, the
// goms counterpart of the original "middleware by endpoint". A call passes
// them in this order, outermost first: "tracing" and "metrics" (from
// goms/tracing and goms/prom), "accesslog", "recovery" (so that a panic
// anywhere below is logged and counted as internal), "auth" (Config.Auth),
// "ratelimit" (the rate limits of Rules, which tell callers apart by the
// identity auth found), "validate" (goms/validate), then the interceptors
// of other Config.Plugins in their order, then the handler. Before all of
// them, every call gets its request id (RequestIDFrom). Names that no
// interceptor answers to, and rules for services or methods that are not
// mounted, are errors when the server starts.
type Interceptors struct {
	// Default names the interceptors of every procedure. Nil means every
	// interceptor the server has: recovery and the access log, auth when
	// Config.Auth is set, and those of Config.Plugins. An empty, non-nil
	// list means none.
	Default []string `yaml:"default"`
	// Rules adjust Default for one service ("goms.v1.GoMsService") or one
	// method ("goms.v1.GoMsService/Delete"). A method's rule applies after
	// its service's.
	Rules map[string]MethodConfig `yaml:"rules"`
}

// MethodConfig configures the calls of one service or method, as an entry
// of Interceptors.Rules: the interceptors it adds or removes, its priority
// when the listener sheds load, its rate limit and its server deadlines. A
// method's fields that are set win over its service's.
type MethodConfig struct {
	Add    []string `yaml:"add"`
	Remove []string `yaml:"remove"`
	// Priority says how soon an overloaded listener sheds the calls:
	// "sheddable" first, "normal", then "critical" last. Default "normal".
	// Health checks and reflection are never shed.
	Priority string `yaml:"priority"`
	// RateLimit bounds the rate of calls, for all callers or per caller.
	// Default: no limit.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Timeout is the deadline the server gives calls that come without
	// one. Default 0: none.
	Timeout time.Duration `yaml:"timeout"`
	// MaxTimeout caps the deadline of every call: a caller asking for
	// more, or for none, gets MaxTimeout (or Timeout when it is shorter
	// and the caller asked for none). Default 0: no cap.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// TimeoutStreams applies Timeout and MaxTimeout to streaming methods
	// too; by default they apply to unary methods only, as a stream may
	// rightly stay open for hours.
	TimeoutStreams bool `yaml:"timeout_streams"`
}

// check validates the limits of a rule and applies their defaults.
func (r MethodConfig) check(key string) (MethodConfig, error) {
	if !priority(r.Priority).valid() {
		return r, fmt.Errorf("goms: interceptors.rules[%q]: priority %q: want %q, %q or %q", key, r.Priority, priorityCritical, priorityNormal, prioritySheddable)
	}
	if r.Timeout < 0 || r.MaxTimeout < 0 {
		return r, fmt.Errorf("goms: interceptors.rules[%q]: timeout and max_timeout must not be negative", key)
	}
	rl, err := r.RateLimit.check()
	if err != nil {
		return r, fmt.Errorf("goms: interceptors.rules[%q]: %w", key, err)
	}
	r.RateLimit = rl
	return r, nil
}

// quietServices are the services whose calls the default selection keeps
// out of access logs: health checks and reflection are frequent and say
// nothing about the application.
var quietServices = []string{
	grpchealth.HealthV1ServiceName,
	grpcreflect.ReflectV1ServiceName,
	grpcreflect.ReflectV1AlphaServiceName,
}

// chains resolves the interceptors of each procedure. It is built when the
// server starts and read without locks afterwards.
type chains struct {
	named    map[string]connect.Interceptor
	order    []string // every available name, in chain order
	defaults []string
	rules    map[string]MethodConfig
	explicit bool // Default was set
}

func newChains(named map[string]connect.Interceptor, plugins []string, cfg Interceptors) (*chains, error) {
	c := &chains{named: named, rules: cfg.Rules}
	for _, name := range interceptorOrder {
		if _, ok := named[name]; ok {
			c.order = append(c.order, name)
		}
	}
	c.order = append(c.order, plugins...)
	if cfg.Default != nil {
		c.explicit = true
		for _, name := range cfg.Default {
			if _, ok := named[name]; !ok {
				return nil, fmt.Errorf("goms: interceptors.default: unknown interceptor %q (have %s)", name, quoteAll(c.order))
			}
		}
		c.defaults = cfg.Default
	} else {
		c.defaults = c.order
	}
	for key, rule := range cfg.Rules {
		if key == "" || strings.Count(key, "/") > 1 {
			return nil, fmt.Errorf("goms: interceptors.rules[%q]: want a service (\"pkg.Service\") or a method (\"pkg.Service/Method\")", key)
		}
		for _, name := range slices.Concat(rule.Add, rule.Remove) {
			if _, ok := named[name]; !ok {
				return nil, fmt.Errorf("goms: interceptors.rules[%q]: unknown interceptor %q (have %s)", key, name, quoteAll(c.order))
			}
		}
	}
	return c, nil
}

// checkRules reports rules for services or methods that nothing mounts.
func (c *chains) checkRules(mounted map[string]bool, procedures map[string]bool) error {
	for key := range c.rules {
		if strings.Contains(key, "/") {
			if !procedures["/"+key] {
				return fmt.Errorf("goms: interceptors.rules[%q]: no mounted service has this method", key)
			}
		} else if !mounted[key] {
			return fmt.Errorf("goms: interceptors.rules[%q]: no such service is mounted", key)
		}
	}
	return nil
}

// names returns the interceptor names of a procedure ("/pkg.Service/Method"),
// in chain order.
func (c *chains) names(procedure string) []string {
	service, method := splitProcedure(procedure)
	selected := make(map[string]bool, len(c.order))
	for _, name := range c.defaults {
		selected[name] = true
	}
	if !c.explicit && slices.Contains(quietServices, service) {
		delete(selected, interceptorAccessLog)
	}
	for _, key := range []string{service, service + "/" + method} {
		rule := c.rules[key]
		for _, name := range rule.Add {
			selected[name] = true
		}
		for _, name := range rule.Remove {
			delete(selected, name)
		}
	}
	if _, ok := c.named[interceptorRateLimit]; ok {
		selected[interceptorRateLimit] = true
	}
	var out []string
	for _, name := range c.order {
		if selected[name] {
			out = append(out, name)
		}
	}
	return out
}

func splitProcedure(procedure string) (service, method string) {
	procedure = strings.TrimPrefix(procedure, "/")
	service, method, _ = strings.Cut(procedure, "/")
	return service, method
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// dispatchInterceptor gives every call its request id (RequestIDHeader),
// whatever interceptors its rules select, and applies to each procedure
// the chain its configuration selects. connect wraps a handler once per procedure, before
// the procedure is known, so the chain is built at the first call and
// reused after that.
type dispatchInterceptor struct {
	s *Server
	// edge leaves out the validation of messages, which an edge forwards
	// as bytes: the remote validates them.
	edge bool
}

func (d dispatchInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	var once sync.Once
	var chain connect.UnaryFunc
	var limits deadlines
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		once.Do(func() {
			chain = next
			for _, ic := range d.s.interceptorsFor(req.Spec().Procedure, d.edge) {
				chain = ic.WrapUnary(chain)
			}
			limits = deadlinesOf(d.s.cfg.Interceptors.Rules, req.Spec().Procedure, false)
		})
		id := requestID(req.Header())
		ctx = context.WithValue(ctx, requestIDKey{}, id)
		if len(d.s.cfg.Propagate) > 0 {
			ctx = context.WithValue(ctx, inboundHeaderKey{}, req.Header())
		}
		ctx, cancel := limits.apply(ctx, d.s.admissionLog, req.Spec().Procedure)
		if cancel != nil {
			defer cancel()
		}
		res, err := chain(ctx, req)
		if res != nil {
			res.Header().Set(RequestIDHeader, id)
		} else if ce := asConnectError(err); ce != nil {
			ce.Meta().Set(RequestIDHeader, id)
		}
		if err != nil && d.s.status != nil {
			d.s.status.failed(req.Spec().Procedure, err, id)
		}
		return res, err
	}
}

func (d dispatchInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (d dispatchInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	var once sync.Once
	var chain connect.StreamingHandlerFunc
	var limits deadlines
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		once.Do(func() {
			chain = next
			for _, ic := range d.s.interceptorsFor(conn.Spec().Procedure, d.edge) {
				chain = ic.WrapStreamingHandler(chain)
			}
			limits = deadlinesOf(d.s.cfg.Interceptors.Rules, conn.Spec().Procedure, conn.Spec().StreamType != connect.StreamTypeUnary)
		})
		id := requestID(conn.RequestHeader())
		conn.ResponseHeader().Set(RequestIDHeader, id)
		ctx = context.WithValue(ctx, requestIDKey{}, id)
		if len(d.s.cfg.Propagate) > 0 {
			ctx = context.WithValue(ctx, inboundHeaderKey{}, conn.RequestHeader())
		}
		ctx, cancel := limits.apply(ctx, d.s.admissionLog, conn.Spec().Procedure)
		if cancel != nil {
			defer cancel()
		}
		err := chain(ctx, conn)
		if err != nil && d.s.status != nil {
			d.s.status.failed(conn.Spec().Procedure, err, id)
		}
		return err
	}
}

// interceptorsFor returns a procedure's interceptors innermost first, the
// order in which to wrap a handler.
func (s *Server) interceptorsFor(procedure string, edge bool) []connect.Interceptor {
	names := s.chains.names(procedure)
	out := make([]connect.Interceptor, 0, len(names))
	for i := len(names) - 1; i >= 0; i-- {
		if edge && names[i] == interceptorValidate {
			continue
		}
		out = append(out, s.chains.named[names[i]])
	}
	return out
}

// initInterceptors gathers the named interceptors and builds the handler
// and client options every mount and client shares.
func (s *Server) initInterceptors() error {
	named := map[string]connect.Interceptor{
		interceptorRecovery:  recoverInterceptor{logger: s.logger},
		interceptorAccessLog: accessLogInterceptor{logger: s.logger, level: s.cfg.Log.accessLevel(), file: s.accessFile},
	}
	auth, err := checkAuth(s.cfg, s.logger)
	if err != nil {
		return err
	}
	rules := make(map[string]MethodConfig, len(s.cfg.Interceptors.Rules))
	for key, rule := range s.cfg.Interceptors.Rules {
		if rules[key], err = rule.check(key); err != nil {
			return err
		}
	}
	s.cfg.Interceptors.Rules = rules
	rateLimits, err := newRateLimitInterceptor(rules, s.admissionLog)
	if err != nil {
		return err
	}
	if rateLimits != nil {
		named[interceptorRateLimit] = rateLimits
	}
	if auth != nil {
		named[interceptorAuth] = auth
		s.auth = auth
	}
	var plugins []string
	var clientInterceptors []connect.Interceptor
	for _, p := range s.cfg.Plugins {
		name := p.Name()
		if _, dup := named[name]; dup {
			return fmt.Errorf("goms: plugins: two interceptors are named %q", name)
		}
		named[name] = p.Interceptor()
		if !slices.Contains(interceptorOrder, name) {
			plugins = append(plugins, name)
		}
		if cp, ok := p.(ClientPlugin); ok {
			clientInterceptors = append(clientInterceptors, cp.ClientInterceptor())
		}
	}
	chains, err := newChains(named, plugins, s.cfg.Interceptors)
	if err != nil {
		return err
	}
	s.chains = chains
	s.handlerOpts = []connect.HandlerOption{
		connect.WithReadMaxBytes(s.cfg.MaxMessageBytes),
		boundedGzip(s.cfg.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithInterceptors(drainInterceptor{}, dispatchInterceptor{s: s}),
	}
	s.edgeHandlerOpts = slices.Clone(s.handlerOpts)
	s.edgeHandlerOpts[len(s.edgeHandlerOpts)-1] = connect.WithInterceptors(drainInterceptor{}, dispatchInterceptor{s: s, edge: true})
	// Propagation runs innermost on the client side, after tracing and
	// metrics have seen the call.
	clientInterceptors = append(clientInterceptors, propagateInterceptor{headers: s.cfg.Propagate})
	s.clientOpts = append(s.clientOpts, connect.WithInterceptors(clientInterceptors...))
	return nil
}

// ClientOptions returns the connect client options for clients of other
// services: the client side of the plugins (metrics, tracing) and header
// propagation (the request id of the call being served, and the headers
// of Config.Propagate). Pass them to generated client constructors with
// the pair Client returns.
func (s *Server) ClientOptions() []connect.ClientOption {
	return slices.Clip(s.clientOpts)
}

// checkInterceptorRules checks, once every mount is known, that the rules
// name mounted services and methods. Called with s.mu held.
func (s *Server) checkInterceptorRules() error {
	services := make(map[string]bool)
	procedures := make(map[string]bool)
	for _, l := range s.listeners {
		for _, name := range l.routes.names {
			services[name] = true
		}
		for p := range l.routes.procedures {
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
	if err := s.chains.checkRules(services, procedures); err != nil {
		return err
	}
	if s.auth != nil {
		return s.auth.checkPolicies(services, procedures)
	}
	return nil
}
