package goms

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Admission is the layer between a listener's engine and its protocol
// filter: it decides, before a handler runs, whether a call runs and until
// when. Health checks, reflection and the admin listener pass untouched.
//
//  1. The adaptive concurrency limit (Listener.AdaptiveLimit) and the hard
//     ceiling (Listener.MaxInFlight) refuse calls beyond them with
//     CodeUnavailable, sheddable calls first and critical ones last
//     (MethodConfig.Priority).
//
// Two more limits need to know the procedure a REST route calls, or the
// caller's Identity, and so apply in the handler: server deadlines
// (MethodConfig.Timeout, MethodConfig.MaxTimeout), set before the first interceptor runs,
// so that every interceptor and the handler see them, in-process calls
// included; and rate limits (MethodConfig.RateLimit), right after auth
// (the "ratelimit" interceptor).

// priority says which calls an overloaded listener sheds first
// (MethodConfig.Priority).
type priority string

const (
	// priorityNormal is the priority of the calls no rule marks: shed
	// once the calls in flight reach the adaptive limit.
	priorityNormal priority = "normal"
	// prioritySheddable calls are shed first: once the calls in flight
	// reach three quarters of the adaptive limit.
	prioritySheddable priority = "sheddable"
	// priorityCritical calls are shed last: only once the calls in flight
	// reach twice the adaptive limit (or MaxInFlight).
	priorityCritical priority = "critical"
)

func (p priority) valid() bool {
	return p == "" || p == priorityNormal || p == prioritySheddable || p == priorityCritical
}

// AdaptiveLimit configures a listener's adaptive concurrency limit, on by
// default. The limit follows the latency of the listener's unary calls,
// measured over windows of Window: while it stays within Tolerance times
// its long-run average, or within Slack of it, the limit may grow (when
// calls use at least half of it), and when calls stay slower for three
// windows in a row, or get twice slower than that at once, the limit
// shrinks to the calls that ran times the ratio (half at most) plus their
// square root, the headroom of a queue that keeps the server busy, but
// not below the most calls that ran with good latency in the last 30
// seconds: latency that grows while concurrency does not (a busy
// neighbour on the machine) sheds nothing. Calls beyond it fail at once
// with CodeUnavailable, with gRPC's
// grpc-retry-pushback-ms or HTTP's Retry-After, instead of queuing while
// every call gets slower. Streaming calls are not counted: their duration
// says nothing about load. The limit starts at Max, so a server that is
// not overloaded never sheds.
type AdaptiveLimit struct {
	// Disabled turns the adaptive limit off; MaxInFlight still applies.
	Disabled bool `yaml:"disabled"`
	// Min is the lowest the limit goes. Default 4.
	Min int `yaml:"min"`
	// Max is the highest the limit goes, and where it starts. Default
	// 1000.
	Max int `yaml:"max"`
	// Tolerance is how much slower than their long-run average calls may
	// get before the limit shrinks: 1.5 lets latency grow by half.
	// Default 1.5; at least 1.
	Tolerance float64 `yaml:"tolerance"`
	// Slack is how much slower than their long-run average calls may get,
	// whatever Tolerance allows, before the limit shrinks: fast calls
	// that queue a little on a busy CPU (50 calls of 100µs each wait 5ms)
	// are not an overload. Default 20ms.
	Slack time.Duration `yaml:"slack"`
	// Window is how often the limit is updated, given at least 10 calls
	// ended. Default 100ms.
	Window time.Duration `yaml:"window"`
}

// check validates the configuration and applies its defaults.
func (a AdaptiveLimit) check() (AdaptiveLimit, error) {
	if a.Min < 0 || a.Max < 0 || a.Tolerance < 0 || a.Window < 0 || a.Slack < 0 {
		return a, fmt.Errorf("adaptive_limit: min, max, tolerance, slack and window must not be negative")
	}
	if a.Slack == 0 {
		a.Slack = 20 * time.Millisecond
	}
	if a.Min == 0 {
		a.Min = 4
	}
	if a.Max == 0 {
		a.Max = 1000
	}
	if a.Tolerance == 0 {
		a.Tolerance = 1.5
	}
	if a.Window == 0 {
		a.Window = 100 * time.Millisecond
	}
	if a.Min > a.Max {
		return a, fmt.Errorf("adaptive_limit: min %d is above max %d", a.Min, a.Max)
	}
	if a.Tolerance < 1 {
		return a, fmt.Errorf("adaptive_limit: tolerance %v is below 1", a.Tolerance)
	}
	return a, nil
}

// The kinds of AdmissionEvent.
const (
	// admissionShed is a call refused with CodeUnavailable because the
	// listener was at its limit. Reasons: "adaptive_limit",
	// "max_in_flight".
	admissionShed = "shed"
	// admissionRateLimited is a call refused with CodeResourceExhausted
	// by a rate limit. Reasons: "method" (a bucket for all callers),
	// "caller" (a bucket per caller).
	admissionRateLimited = "rate_limited"
	// admissionDeadline is a call whose deadline the server set. Reasons:
	// "default" (the caller sent none), "max" (the caller asked for more
	// than MethodConfig.MaxTimeout, or for nothing and no default applies).
	admissionDeadline = "deadline"
)

// AdmissionEvent describes one admission decision.
type AdmissionEvent struct {
	// Listener names the listener of the call; empty for deadlines and
	// rate limits, which apply in the handler.
	Listener string
	// Procedure is the called procedure, "/pkg.Service/Method".
	Procedure string
	// Kind says what admission did: "shed" (refused with
	// CodeUnavailable at the listener's limit; Reason "adaptive_limit" or
	// "max_in_flight"), "rate_limited" (refused with
	// CodeResourceExhausted; Reason "method" or "caller") or "deadline"
	// (the server set the call's deadline; Reason "default" or "max").
	Kind string
	// Reason says which limit decided; see Kind.
	Reason string
}

// AdmissionObserver is a Plugin that is told of every admission decision
// and of every change of a listener's adaptive limit, such as goms/prom,
// which counts them. Its methods are called on the path of calls and must
// be quick.
type AdmissionObserver interface {
	Plugin
	ObserveAdmission(AdmissionEvent)
	ObserveLimit(listener string, limit int)
}

// admissionLog reports admission decisions to the observers and the log:
// each decision at debug level, and at most one summary per second at warn
// while calls are refused.
type admissionLog struct {
	logger    *slog.Logger
	observers []AdmissionObserver
	// shed and rateLimited count refusals since the server started, which
	// the status page shows; logged holds their values at the last
	// summary, lastSummary its time, in Unix nanoseconds.
	shed, rateLimited             atomic.Int64
	loggedShed, loggedRateLimited atomic.Int64
	lastSummary                   atomic.Int64
}

func newAdmissionLog(logger *slog.Logger, plugins []Plugin) *admissionLog {
	a := &admissionLog{logger: logger}
	for _, p := range plugins {
		if o, ok := p.(AdmissionObserver); ok {
			a.observers = append(a.observers, o)
		}
	}
	return a
}

func (a *admissionLog) event(e AdmissionEvent) {
	for _, o := range a.observers {
		o.ObserveAdmission(e)
	}
	if a.logger.Enabled(context.Background(), slog.LevelDebug) {
		a.logger.LogAttrs(context.Background(), slog.LevelDebug, "goms: admission",
			slog.String("listener", e.Listener), slog.String("procedure", e.Procedure),
			slog.String("decision", string(e.Kind)), slog.String("reason", e.Reason))
	}
	switch e.Kind {
	case admissionShed:
		a.shed.Add(1)
	case admissionRateLimited:
		a.rateLimited.Add(1)
	default:
		return
	}
	now := time.Now().UnixNano()
	last := a.lastSummary.Load()
	if now-last < int64(time.Second) || !a.lastSummary.CompareAndSwap(last, now) {
		return
	}
	shed, limited := a.shed.Load(), a.rateLimited.Load()
	a.logger.LogAttrs(context.Background(), slog.LevelWarn, "goms: refusing calls",
		slog.Int64("shed", shed-a.loggedShed.Swap(shed)), slog.Int64("rate_limited", limited-a.loggedRateLimited.Swap(limited)),
		slog.Duration("over", time.Duration(min(now-last, int64(time.Hour)))))
}

func (a *admissionLog) limit(listener string, old, limit int) {
	for _, o := range a.observers {
		o.ObserveLimit(listener, limit)
	}
	if a.logger.Enabled(context.Background(), slog.LevelDebug) {
		a.logger.LogAttrs(context.Background(), slog.LevelDebug, "goms: adaptive limit",
			slog.String("listener", listener), slog.Int("from", old), slog.Int("to", limit))
	}
}

// callPolicy is what admission applies to one procedure.
type callPolicy struct {
	procedure string
	exempt    bool // health, reflection: never limited
	streaming bool // not counted by the adaptive limit
	priority  priority
}

// restPolicy is the policy of REST routes, whose procedure only the
// transcoder knows: unary calls of normal priority.
var restPolicy = &callPolicy{procedure: "REST", priority: priorityNormal}

// admission is one listener's admission layer.
type admission struct {
	listener    string
	log         *admissionLog
	off         bool // the admin listener: everything passes
	maxInFlight int64
	inFlight    atomic.Int64 // calls MaxInFlight counts
	limiter     *limiter     // nil when the adaptive limit is disabled
	// policies by procedure path; written by resolve before the listener
	// serves, read without locks afterwards.
	policies map[string]*callPolicy
	rules    map[string]MethodConfig
	// The errors of shed calls, built once: gRPC's carry
	// grpc-retry-pushback-ms, the others Retry-After.
	limited, ceiling [2]*connect.Error
}

func newAdmission(name string, cfg Listener, rules map[string]MethodConfig, log *admissionLog) *admission {
	a := &admission{
		listener:    name,
		off:         name == adminListener,
		log:         log,
		maxInFlight: int64(cfg.MaxInFlight),
		rules:       rules,
		policies:    make(map[string]*callPolicy),
	}
	pushback := 100 * time.Millisecond
	if !cfg.AdaptiveLimit.Disabled && !a.off {
		a.limiter = newLimiter(cfg.AdaptiveLimit, func(old, limit int) { log.limit(name, old, limit) })
		pushback = cfg.AdaptiveLimit.Window
		for _, o := range log.observers {
			o.ObserveLimit(name, cfg.AdaptiveLimit.Max)
		}
	}
	for i, grpc := range []bool{false, true} {
		a.limited[i] = shedError(fmt.Errorf("listener %q is overloaded: calls in flight are at its adaptive limit; retry later or on another replica", name), grpc, pushback)
		a.ceiling[i] = shedError(fmt.Errorf("listener %q is overloaded: %d calls in flight; retry later or on another replica", name, cfg.MaxInFlight), grpc, pushback)
	}
	return a
}

func shedError(err error, grpc bool, pushback time.Duration) *connect.Error {
	ce := connect.NewError(connect.CodeUnavailable, err)
	if grpc {
		ce.Meta().Set("Grpc-Retry-Pushback-Ms", strconv.FormatInt(pushback.Milliseconds(), 10))
	} else {
		ce.Meta().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(pushback.Seconds())), 10))
	}
	return ce
}

// resolve computes the policy of every procedure the listener serves.
// Called once every mount is known, before the listener serves.
func (a *admission) resolve(procedures map[string]http.Handler) {
	for p := range procedures {
		a.policies[p] = a.policyOf(p)
	}
}

// policy returns the policy of a procedure path; procedures of services
// without a registered descriptor get theirs computed at each call.
func (a *admission) policy(path string) *callPolicy {
	if p, ok := a.policies[path]; ok {
		return p
	}
	return a.policyOf(path)
}

func (a *admission) policyOf(path string) *callPolicy {
	service, method := splitProcedure(path)
	p := &callPolicy{procedure: path, exempt: exemptFromLimit(path), priority: priorityNormal, streaming: true}
	if md := methodDescriptor(service, method); md != nil {
		p.streaming = md.IsStreamingClient() || md.IsStreamingServer()
	}
	for _, key := range []string{service, service + "/" + method} {
		if r, ok := a.rules[key]; ok && r.Priority != "" {
			p.priority = priority(r.Priority)
		}
	}
	return p
}

func methodDescriptor(service, method string) protoreflect.MethodDescriptor {
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil
	}
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil
	}
	return sd.Methods().ByName(protoreflect.Name(method))
}

// exemptFromLimit reports whether a procedure stays out of admission:
// health checks must answer while the listener sheds load, and reflection
// is how operators look at it.
func exemptFromLimit(path string) bool {
	service, _ := splitProcedure(path)
	return builtinService(service)
}

// ticket is an admitted call: leave gives back what admit took.
type ticket struct {
	a       *admission
	counted bool      // counted by MaxInFlight
	start   time.Time // non-zero when counted by the adaptive limit
}

// admit decides whether the call r to path, a procedure or (when rest is
// set) a REST route, runs. When it does not, admit has answered it in its
// protocol and ok is false. When it does, the ticket's leave must be
// called once the call ends.
func (a *admission) admit(w http.ResponseWriter, r *http.Request, path string, p protocol, rest bool) (t ticket, ok bool) {
	t.a = a
	if a.off {
		return t, true
	}
	pol := restPolicy
	if !rest {
		pol = a.policy(path)
	}
	if pol.exempt {
		return t, true
	}
	grpc := 0
	if p == protocolGRPC || p == protocolGRPCWeb {
		grpc = 1
	}
	if a.maxInFlight > 0 {
		if a.inFlight.Add(1) > a.maxInFlight {
			a.inFlight.Add(-1)
			a.refuse(w, r, pol, a.ceiling[grpc], "max_in_flight")
			return t, false
		}
		t.counted = true
	}
	if a.limiter != nil && !pol.streaming {
		if !a.limiter.acquire(pol.priority) {
			t.leave()
			a.refuse(w, r, pol, a.limited[grpc], "adaptive_limit")
			return t, false
		}
		t.start = time.Now()
	}
	return t, true
}

func (a *admission) refuse(w http.ResponseWriter, r *http.Request, pol *callPolicy, err *connect.Error, reason string) {
	a.log.event(AdmissionEvent{Listener: a.listener, Procedure: pol.procedure, Kind: admissionShed, Reason: reason})
	writeError(w, r, err)
}

// calls returns the calls in flight that admission counts, for the
// status page: every call but health checks and reflection when
// MaxInFlight is set, else the unary calls of the adaptive limit; ok is
// false when neither counts. Counting calls for the page alone would add
// a shared atomic to every call.
func (a *admission) calls() (n int64, ok bool) {
	switch {
	case a.maxInFlight > 0:
		return a.inFlight.Load(), true
	case a.limiter != nil:
		return a.limiter.inFlight.Load(), true
	}
	return 0, false
}

// deadlines are the server deadlines of one procedure.
type deadlines struct {
	timeout    time.Duration // for calls without a deadline; 0: none
	maxTimeout time.Duration // 0: none
}

// deadlinesOf returns the deadlines the rules give a procedure.
func deadlinesOf(rules map[string]MethodConfig, procedure string, streaming bool) deadlines {
	service, method := splitProcedure(procedure)
	var d deadlines
	var streams bool
	for _, key := range []string{service, service + "/" + method} {
		r := rules[key]
		if r.Timeout != 0 {
			d.timeout = r.Timeout
		}
		if r.MaxTimeout != 0 {
			d.maxTimeout = r.MaxTimeout
		}
		streams = streams || r.TimeoutStreams
	}
	if streaming && !streams {
		return deadlines{}
	}
	return d
}

// apply returns ctx with the server's deadline for a call to procedure,
// when it sets one: the default for a call that came without a deadline,
// the maximum for one that asked for more. cancel is nil when ctx is
// returned as is.
func (d deadlines) apply(ctx context.Context, log *admissionLog, procedure string) (_ context.Context, cancel context.CancelFunc) {
	if d.timeout == 0 && d.maxTimeout == 0 {
		return ctx, nil
	}
	deadline, asked := ctx.Deadline()
	var t time.Duration
	var reason string
	switch {
	case !asked && d.timeout > 0:
		t, reason = d.timeout, "default"
		if d.maxTimeout > 0 {
			t = min(t, d.maxTimeout)
		}
	case d.maxTimeout > 0 && (!asked || time.Until(deadline) > d.maxTimeout):
		t, reason = d.maxTimeout, "max"
	default:
		return ctx, nil
	}
	log.event(AdmissionEvent{Procedure: procedure, Kind: admissionDeadline, Reason: reason})
	return context.WithTimeout(ctx, t)
}

// leave ends an admitted call.
func (t ticket) leave() {
	if t.counted {
		t.a.inFlight.Add(-1)
	}
	if !t.start.IsZero() {
		t.a.limiter.release(t.start)
	}
}
