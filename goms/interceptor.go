package goms

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
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

// Interceptors selects the interceptors of each procedure by name. A call
// passes them in this order, outermost first: "tracing" and "metrics"
// (from goms/tracing and goms/prom), "accesslog", "recovery" (so that a
// panic anywhere below is logged and counted as internal), "auth"
// (Config.Auth), "ratelimit" (the rate limits of Rules, which tell callers
// apart by the identity auth found), "validate" (goms/validate), then the
// interceptors of other Config.Plugins in their order, then the handler.
// Before all of them, every call gets its request id (RequestIDFrom).
// Names that no interceptor answers to, and rules for services or methods
// that are not mounted, are errors when the server starts.
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

// chains resolves the interceptors of each procedure. It is built when the
// server starts and read without locks afterwards.
type chains struct {
	named    map[string]connect.Interceptor
	order    []string // every available name, in chain order
	defaults []string
	rules    map[string]MethodConfig
	explicit bool // Default was set
	// auth is the auth interceptor, nil unless Config.Auth is on.
	auth *authInterceptor
	// client are the interceptors of the server's clients, outermost
	// first: those of ClientPlugins, then header propagation.
	client []connect.Interceptor
}

// newChains gathers the interceptors a server's configuration names
// (its own, those of cfg.Plugins) and checks the selection of
// cfg.Interceptors. cfg.Interceptors.Rules must have been checked.
func newChains(cfg Config, logger *slog.Logger, log *admissionLog, file *accessFile) (*chains, error) {
	named := map[string]connect.Interceptor{
		interceptorRecovery:  recoverInterceptor{logger: logger},
		interceptorAccessLog: accessLogInterceptor{logger: logger, level: cfg.Log.accessLevel(), file: file},
	}
	auth, err := checkAuth(cfg, logger)
	if err != nil {
		return nil, err
	}
	if auth != nil {
		named[interceptorAuth] = auth
	}
	rateLimits, err := newRateLimitInterceptor(cfg.Interceptors.Rules, log)
	if err != nil {
		return nil, err
	}
	if rateLimits != nil {
		named[interceptorRateLimit] = rateLimits
	}
	var plugins []string
	var client []connect.Interceptor
	for _, p := range cfg.Plugins {
		name := p.Name()
		if _, dup := named[name]; dup {
			return nil, fmt.Errorf("goms: plugins: two interceptors are named %q", name)
		}
		named[name] = p.Interceptor()
		if !slices.Contains(interceptorOrder, name) {
			plugins = append(plugins, name)
		}
		if cp, ok := p.(ClientPlugin); ok {
			client = append(client, cp.ClientInterceptor())
		}
	}
	// Propagation runs innermost on the client side, after tracing and
	// metrics have seen the call.
	client = append(client, propagateInterceptor{headers: cfg.Propagate})

	c := &chains{named: named, rules: cfg.Interceptors.Rules, auth: auth, client: client}
	for _, name := range interceptorOrder {
		if _, ok := named[name]; ok {
			c.order = append(c.order, name)
		}
	}
	c.order = append(c.order, plugins...)
	if d := cfg.Interceptors.Default; d != nil {
		c.explicit = true
		for _, name := range d {
			if _, ok := named[name]; !ok {
				return nil, fmt.Errorf("goms: interceptors.default: unknown interceptor %q (have %s)", name, quoteAll(c.order))
			}
		}
		c.defaults = d
	} else {
		c.defaults = c.order
	}
	for key, rule := range c.rules {
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

// interceptors returns a procedure's interceptors innermost first, the
// order in which to wrap a handler. The edge leaves out validation: it
// forwards messages as bytes, and the remote validates them.
func (c *chains) interceptors(procedure string, edge bool) []connect.Interceptor {
	names := c.names(procedure)
	out := make([]connect.Interceptor, 0, len(names))
	for i := len(names) - 1; i >= 0; i-- {
		if edge && names[i] == interceptorValidate {
			continue
		}
		out = append(out, c.named[names[i]])
	}
	return out
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
	if c.auth != nil {
		return c.auth.checkPolicies(mounted, procedures)
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
	if !c.explicit && builtinService(service) {
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
