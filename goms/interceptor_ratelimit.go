package goms

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"connectrpc.com/connect"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RateLimit bounds the calls to the service or method of a MethodConfig with a
// token bucket (golang.org/x/time/rate): Rate tokens a second, at most
// Burst saved up. A call beyond it fails at once with
// CodeResourceExhausted, a google.rpc.RetryInfo detail saying when to
// retry, and that delay in Retry-After (REST and Connect callers see HTTP
// 429) and grpc-retry-pushback-ms (gRPC). A service's rule gives the
// service one bucket, shared by its methods; a method's rule replaces it
// for that method.
type RateLimit struct {
	// Rate is the calls a second let through. 0, the default, means no
	// limit.
	Rate float64 `yaml:"rate"`
	// Burst is the number of calls that may come at once after a quiet
	// spell. Default: Rate rounded up.
	Burst int `yaml:"burst"`
	// PerCaller gives each caller a bucket of its own instead of one for
	// every caller: callers are told apart by their Identity (see Auth),
	// or by the IP address of their connection when they have none.
	PerCaller bool `yaml:"per_caller"`
	// MaxCallers bounds the buckets PerCaller keeps: beyond it, the bucket
	// of the caller seen least recently is dropped (that caller starts
	// again with a full bucket). Default 10000.
	MaxCallers int `yaml:"max_callers"`
}

func (r RateLimit) check() (RateLimit, error) {
	if r.Rate < 0 || math.IsNaN(r.Rate) || math.IsInf(r.Rate, 0) {
		return r, fmt.Errorf("rate_limit.rate: %v is not a rate: want calls per second, 0 or more", r.Rate)
	}
	if r.Burst < 0 || r.MaxCallers < 0 {
		return r, fmt.Errorf("rate_limit: burst and max_callers must not be negative")
	}
	if r.Rate == 0 {
		if r.Burst != 0 || r.PerCaller || r.MaxCallers != 0 {
			return r, fmt.Errorf("rate_limit: burst, per_caller and max_callers need a rate")
		}
		return r, nil
	}
	if r.Burst == 0 {
		r.Burst = int(math.Ceil(r.Rate))
	}
	if r.MaxCallers == 0 {
		r.MaxCallers = 10000
	}
	return r, nil
}

// bucket is the token bucket of one rule: shared, or one per caller.
type bucket struct {
	key     string // the rule's key, for errors
	limit   RateLimit
	shared  *rate.Limiter
	callers *lru.Cache[string, *rate.Limiter]
}

func newBucket(key string, r RateLimit) (*bucket, error) {
	b := &bucket{key: key, limit: r}
	if !r.PerCaller {
		b.shared = rate.NewLimiter(rate.Limit(r.Rate), r.Burst)
		return b, nil
	}
	callers, err := lru.New[string, *rate.Limiter](r.MaxCallers)
	if err != nil {
		return nil, err
	}
	b.callers = callers
	return b, nil
}

// take takes a token for a call from caller and returns how long the
// caller should wait when there is none.
func (b *bucket) take(caller string) (time.Duration, bool) {
	lim := b.shared
	if lim == nil {
		var ok bool
		if lim, ok = b.callers.Get(caller); !ok {
			lim = rate.NewLimiter(rate.Limit(b.limit.Rate), b.limit.Burst)
			if prev, ok, _ := b.callers.PeekOrAdd(caller, lim); ok {
				lim = prev
			}
		}
	}
	now := time.Now()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// rateLimitInterceptor applies the rate limits of Interceptors.Rules.
// It runs after auth, which tells callers apart.
type rateLimitInterceptor struct {
	// buckets by rule key: "pkg.Service" or "pkg.Service/Method".
	buckets map[string]*bucket
	log     *admissionLog
}

func newRateLimitInterceptor(rules map[string]MethodConfig, log *admissionLog) (*rateLimitInterceptor, error) {
	ri := &rateLimitInterceptor{buckets: make(map[string]*bucket), log: log}
	for key, rule := range rules {
		if rule.RateLimit.Rate == 0 {
			continue
		}
		b, err := newBucket(key, rule.RateLimit)
		if err != nil {
			return nil, fmt.Errorf("goms: interceptors.rules[%q]: %w", key, err)
		}
		ri.buckets[key] = b
	}
	if len(ri.buckets) == 0 {
		return nil, nil
	}
	return ri, nil
}

// bucketOf returns the bucket of a procedure: its method's, else its
// service's, else nil.
func (ri *rateLimitInterceptor) bucketOf(procedure string) *bucket {
	service, method := splitProcedure(procedure)
	if b, ok := ri.buckets[service+"/"+method]; ok {
		return b
	}
	return ri.buckets[service]
}

func (ri *rateLimitInterceptor) check(ctx context.Context, procedure string, peer connect.Peer) error {
	b := ri.bucketOf(procedure)
	if b == nil {
		return nil
	}
	var caller string
	reason := "method"
	if b.callers != nil {
		reason = "caller"
		caller = callerKey(ctx, peer)
	}
	wait, ok := b.take(caller)
	if ok {
		return nil
	}
	ri.log.event(AdmissionEvent{Procedure: procedure, Kind: admissionRateLimited, Reason: reason})
	return rateLimited(b, wait)
}

// callerKey tells callers apart: by Identity, else by IP address.
func callerKey(ctx context.Context, peer connect.Peer) string {
	if id, ok := IdentityFrom(ctx); ok && id.Subject != "" {
		return "id:" + id.Subject
	}
	host, _, err := net.SplitHostPort(peer.Addr)
	if err != nil {
		host = peer.Addr
	}
	return "ip:" + host
}

func rateLimited(b *bucket, wait time.Duration) error {
	per := ""
	if b.callers != nil {
		per = " per caller"
	}
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"rate limit of %s is %g calls/s%s: retry in %v", b.key, b.limit.Rate, per, wait.Round(time.Millisecond)))
	if detail, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); derr == nil {
		err.AddDetail(detail)
	}
	err.Meta().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
	err.Meta().Set("Grpc-Retry-Pushback-Ms", strconv.FormatInt(max(1, int64(math.Ceil(float64(wait)/float64(time.Millisecond)))), 10))
	return err
}

func (ri *rateLimitInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := ri.check(ctx, req.Spec().Procedure, req.Peer()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (*rateLimitInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (ri *rateLimitInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := ri.check(ctx, conn.Spec().Procedure, conn.Peer()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
