package goms

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// The resolver and the balancer of remote services plug into grpc-go's
// ClientConn, which keeps the connections, reconnects with backoff, runs
// the health checks of each endpoint and retries calls.
//
// The resolver resolves every target of a Remote, names again every
// Remote.ResolveInterval (grpc-go's own DNS resolver only resolves again
// when a connection fails, so new Kubernetes pods would wait for one).
//
// The balancer picks, among the endpoints grpc-go reports connected, the
// cheaper of two chosen at random (endpointState.cost: latency times calls
// in flight), which keeps slow and stuck endpoints out of picks by itself.
// It prefers those whose health check says SERVING (remote_health.go) and
// leaves out those that outlier detection ejected, unless none is left.
// grpc-go's own outlier detection is only registered by its xDS package,
// which would add 25 MB and the Envoy API to every goms binary.

// resolverScheme is the scheme of the targets goms gives grpc-go; each
// ClientConn gets its own resolver builder, so nothing is registered
// globally.
const resolverScheme = "goms"

// balancerName is the load balancing policy of remote services.
const balancerName = "goms_least_request"

func init() {
	balancer.Register(base.NewBalancerBuilder(balancerName, pickerBuilder{}, base.Config{}))
}

// targetResolver is the resolver.Builder and resolver.Resolver of one
// remote.
type targetResolver struct {
	r *remote
}

func (t *targetResolver) Scheme() string { return resolverScheme }

func (t *targetResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	ctx, cancel := context.WithCancel(context.Background())
	res := &runningResolver{t: t, cc: cc, cancel: cancel, now: make(chan struct{}, 1), resolved: make(map[string][]string)}
	t.r.resolver.Store(res)
	go res.run(ctx)
	return res, nil
}

type runningResolver struct {
	t        *targetResolver
	cc       resolver.ClientConn
	cancel   context.CancelFunc
	now      chan struct{}
	resolved map[string][]string // by target: kept when a lookup fails
}

// ResolveNow asks for a resolution; grpc-go calls it when a connection
// fails.
func (res *runningResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case res.now <- struct{}{}:
	default:
	}
}

func (res *runningResolver) Close() { res.cancel() }

// minResolveGap bounds how often connection failures make the resolver
// look names up.
const minResolveGap = time.Second

// A resolution that finds no address is tried again after
// retryResolveMin, doubling up to Remote.ResolveInterval, as grpc-go's DNS
// resolver does: a name that is not served yet (its pods are not Ready, or
// the DNS server has not synced) is found within a second or so of being
// served, rather than a resolve interval later.
const retryResolveMin = 250 * time.Millisecond

func (res *runningResolver) run(ctx context.Context) {
	r := res.t.r
	retry := retryResolveMin
	for {
		wait := r.ResolveInterval
		if res.resolve(ctx) {
			retry = retryResolveMin
		} else {
			wait, retry = min(retry, wait), min(2*retry, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-res.now:
			t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-time.After(minResolveGap):
			}
		}
	}
}

// resolve looks the targets up and gives grpc-go their addresses; it tells
// whether it found any.
func (res *runningResolver) resolve(ctx context.Context) bool {
	r := res.t.r
	var addrs []resolver.Address
	var lastErr error
	for _, target := range r.Targets {
		host, port, _ := net.SplitHostPort(strings.TrimPrefix(target, "dns:///"))
		var hostAddrs []string
		if net.ParseIP(host) != nil {
			hostAddrs = []string{net.JoinHostPort(host, port)}
		} else {
			lctx, cancel := context.WithTimeout(ctx, dialTimeout)
			ips, err := net.DefaultResolver.LookupHost(lctx, host)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return false
				}
				r.env.logger.Warn("goms: resolving remote target", "remote", r.Name, "target", target, "err", err)
				lastErr = err
				hostAddrs = res.resolved[target]
			} else {
				for _, ip := range ips {
					hostAddrs = append(hostAddrs, net.JoinHostPort(ip, port))
				}
				slices.Sort(hostAddrs)
				res.resolved[target] = hostAddrs
			}
		}
		for _, a := range hostAddrs {
			addrs = append(addrs, resolver.Address{
				Addr:       a,
				ServerName: host,
				Attributes: attributes.New(remoteKey{}, r),
			})
		}
	}
	if len(addrs) == 0 && lastErr != nil {
		res.cc.ReportError(lastErr)
		return false
	}
	slices.SortFunc(addrs, func(a, b resolver.Address) int { return strings.Compare(a.Addr, b.Addr) })
	addrs = slices.CompactFunc(addrs, func(a, b resolver.Address) bool { return a.Addr == b.Addr })
	r.endpoints.keep(addrs)
	_ = res.cc.UpdateState(resolver.State{Addresses: addrs})
	return len(addrs) > 0
}

// remoteKey is the attribute key of the remote an address belongs to.
type remoteKey struct{}

// endpointTable holds what the balancer knows of each address of a remote
// across pickers: calls in flight, failures, ejection.
type endpointTable struct {
	r  *remote
	mu sync.Mutex
	m  map[string]*endpointState
}

func (t *endpointTable) get(addr string) *endpointState {
	t.mu.Lock()
	defer t.mu.Unlock()
	ep, ok := t.m[addr]
	if !ok {
		ep = &endpointState{addr: addr}
		t.m[addr] = ep
	}
	return ep
}

// keep forgets the addresses resolution removed.
func (t *endpointTable) keep(addrs []resolver.Address) {
	var gone []*endpointState
	t.mu.Lock()
	for a, ep := range t.m {
		if !slices.ContainsFunc(addrs, func(x resolver.Address) bool { return x.Addr == a }) {
			gone = append(gone, ep)
			delete(t.m, a)
		}
	}
	t.mu.Unlock()
	for _, ep := range gone {
		ep.setConnected(t, false)
	}
}

// setConnected records whether grpc-go reports the endpoint connected,
// and starts or stops the watch of its health accordingly. It tells
// whether the endpoint was connected before.
func (ep *endpointState) setConnected(t *endpointTable, connected bool) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	was := ep.ready.Swap(connected)
	switch {
	case connected && ep.stopWatch == nil:
		ctx, cancel := context.WithCancel(context.Background())
		ep.stopWatch = cancel
		go t.watchHealth(ctx, ep)
	case !connected && ep.stopWatch != nil:
		ep.stopWatch()
		ep.stopWatch = nil
		ep.health.Store(int32(healthUnknown))
	}
	return was
}

func (t *endpointTable) all() []*endpointState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*endpointState, 0, len(t.m))
	for _, ep := range t.m {
		out = append(out, ep)
	}
	slices.SortFunc(out, func(a, b *endpointState) int { return strings.Compare(a.addr, b.addr) })
	return out
}

// Outlier detection: an endpoint whose calls fail consecutiveFailures
// times in a row, or at failureRate or more of at least failureMinCalls
// calls in a failureWindow, is left out of picks for an ejection time that
// starts at baseEjection and doubles with each ejection in a row, up to
// maxEjection. One failure right after it returns ejects it again; a
// success resets the count. At most half of the endpoints are ejected at a
// time: when every endpoint fails, the calls say why instead.
const (
	consecutiveFailures = 3
	failureRate         = 0.5
	failureMinCalls     = 20
	failureWindow       = 5 * time.Second
	baseEjection        = time.Second
	maxEjection         = 30 * time.Second
)

// endpointState is one address's record.
type endpointState struct {
	addr     string
	inFlight atomic.Int64
	// ready is set while grpc-go reports the endpoint connected; health
	// is an endpointHealth, what its health check last said.
	ready  atomic.Bool
	health atomic.Int32
	// recent is the moving average latency, in nanoseconds, and recentAt
	// when a call last updated it (UnixNano).
	recent, recentAt atomic.Int64
	// ejectedUntil is a UnixNano time; zero when not ejected.
	ejectedUntil atomic.Int64

	mu          sync.Mutex
	consecutive int
	ejections   int // in a row
	windowStart time.Time
	calls, fail int
	returned    bool // back from an ejection, no success yet
	stopWatch   context.CancelFunc
}

// cost ranks an endpoint for picks: its recent latency times its calls in
// flight plus one, so that a slow endpoint is avoided even by callers that
// send one call at a time. A latency older than latencyTTL counts as zero:
// an endpoint that was slow gets a call again now and then, which tells
// whether it still is.
func (ep *endpointState) cost(now int64) float64 {
	lat := ep.recent.Load()
	if now-ep.recentAt.Load() > int64(latencyTTL) {
		lat = 0
	}
	return float64(lat+1) * float64(ep.inFlight.Load()+1)
}

// latencyTTL is how long an endpoint's latency counts when it has no newer
// call.
const latencyTTL = time.Second

func (ep *endpointState) ejected(now int64) bool {
	until := ep.ejectedUntil.Load()
	return until != 0 && now < until
}

// done records the outcome of a call on the endpoint and says whether it
// ejects the endpoint now.
func (ep *endpointState) done(t *endpointTable, err error, start time.Time) {
	ep.inFlight.Add(-1)
	now := time.Now()
	took := now.Sub(start)
	ep.mu.Lock()
	// A cancelled call's time counts too: when a hedge won, it is what
	// tells that this endpoint was slow.
	lat := ep.recent.Load()
	if lat == 0 || now.UnixNano()-ep.recentAt.Load() > int64(latencyTTL) {
		lat = int64(took)
	} else {
		lat = (lat*7 + int64(took)) / 8
	}
	ep.recent.Store(lat)
	ep.recentAt.Store(now.UnixNano())
	code := status.Code(err)
	if code == codes.Canceled {
		ep.mu.Unlock()
		return // the caller gave up, or a hedge won: no verdict
	}
	failed := err != nil && endpointFailure(code) && code != codes.ResourceExhausted
	if now.Sub(ep.windowStart) > failureWindow {
		ep.windowStart, ep.calls, ep.fail = now, 0, 0
	}
	ep.calls++
	if !failed {
		ep.consecutive = 0
		if ep.returned {
			ep.returned, ep.ejections = false, 0
			ep.mu.Unlock()
			t.r.env.logger.Info("goms: remote endpoint is healthy again", "remote", t.r.Name, "endpoint", ep.addr)
			return
		}
		ep.mu.Unlock()
		return
	}
	ep.fail++
	ep.consecutive++
	eject := ep.consecutive >= consecutiveFailures || ep.returned ||
		ep.calls >= failureMinCalls && float64(ep.fail) >= failureRate*float64(ep.calls)
	if !eject || ep.ejected(now.UnixNano()) || !t.mayEject(ep) {
		ep.mu.Unlock()
		return
	}
	d := min(baseEjection<<min(ep.ejections, 5), maxEjection)
	ep.ejections++
	ep.ejectedUntil.Store(now.Add(d).UnixNano())
	ep.consecutive, ep.calls, ep.fail, ep.windowStart, ep.returned = 0, 0, 0, now, true
	ep.mu.Unlock()
	t.r.stats.ejections.Add(1)
	t.r.env.logger.Info("goms: remote endpoint ejected", "remote", t.r.Name, "endpoint", ep.addr, "for", d, "err", err)
}

// mayEject tells whether one more endpoint may be ejected: at most half of
// them are at a time.
func (t *endpointTable) mayEject(ep *endpointState) bool {
	now := time.Now().UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	ejected := 0
	for _, other := range t.m {
		if other != ep && other.ejected(now) {
			ejected++
		}
	}
	return 2*(ejected+1) <= len(t.m)
}

// pickerBuilder builds the picker of the ready endpoints.
type pickerBuilder struct{}

func (pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	p := &picker{}
	for sc, sci := range info.ReadySCs {
		r, _ := sci.Address.Attributes.Value(remoteKey{}).(*remote)
		if r == nil {
			continue
		}
		p.table = &r.endpoints
		p.eps = append(p.eps, pickable{sc: sc, ep: r.endpoints.get(sci.Address.Addr)})
	}
	if p.table == nil {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	lost := false
	for _, ep := range p.table.all() {
		ready := slices.ContainsFunc(p.eps, func(e pickable) bool { return e.ep == ep })
		if ep.setConnected(p.table, ready) && !ready {
			lost = true
		}
	}
	if lost {
		// An endpoint went away: its replacement may already be in the
		// names.
		p.table.r.resolveNow()
	}
	return p
}

type pickable struct {
	sc balancer.SubConn
	ep *endpointState
}

type picker struct {
	table *endpointTable
	eps   []pickable
}

// Pick chooses the cheaper (endpointState.cost) of two endpoints taken at
// random among the best placed (tier) of the connected ones. A health
// watch asks for its endpoint by name and is not counted.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	start := time.Now() // one clock read for the whole pick
	now := start.UnixNano()
	hint, _ := info.Ctx.Value(pickHintKey{}).(*pickHint)
	var avoid string
	if hint != nil {
		if hint.want != "" {
			for i := range p.eps {
				if p.eps[i].ep.addr == hint.want {
					return balancer.PickResult{SubConn: p.eps[i].sc}, nil
				}
			}
			return balancer.PickResult{}, status.Errorf(codes.Unavailable, "goms: endpoint %s is not connected", hint.want)
		}
		avoid = hint.avoid
	}
	var a, b *pickable
	best, n := -1, 0
	for i := range p.eps {
		e := &p.eps[i]
		tier := e.ep.tier(now, avoid)
		switch {
		case best >= 0 && tier > best:
			continue
		case tier < best || best < 0:
			best, n, a, b = tier, 0, nil, nil
		}
		// Reservoir sampling of two.
		n++
		switch {
		case n == 1:
			a = e
		case n == 2:
			b = e
		default:
			if j := rand.IntN(n); j == 0 {
				a = e
			} else if j == 1 {
				b = e
			}
		}
	}
	chosen := a
	if b != nil {
		ca, cb := a.ep.cost(now), b.ep.cost(now)
		if cb < ca || cb == ca && rand.IntN(2) == 0 {
			chosen = b
		}
	}
	ep := chosen.ep
	ep.inFlight.Add(1)
	if hint != nil {
		hint.set(ep.addr)
	}
	p.table.r.stats.attempts.Add(1)
	p.table.r.budget.attempt(start.Unix())
	return balancer.PickResult{SubConn: chosen.sc, Done: func(d balancer.DoneInfo) {
		ep.done(p.table, d.Err, start)
	}}, nil
}

// tier places an endpoint for picks, lower first: serving; draining or
// not known yet; without the service; within each, the endpoint the call
// avoids (a hedge's first one) after the others; and ejected endpoints
// after all that are not.
func (ep *endpointState) tier(now int64, avoid string) int {
	t := 2 * endpointHealth(ep.health.Load()).rank()
	if ep.addr == avoid {
		t++
	}
	if ep.ejected(now) {
		t += 6
	}
	return t
}

// pickHint carries, through a call's context, the endpoint a hedged call's
// first attempt went to, so that the second goes elsewhere, or the one a
// health watch must go to.
type pickHint struct {
	want   string // a health watch's endpoint, read by the picker
	mu     sync.Mutex
	avoid  string // read by the picker
	chosen string // set by the picker
}

type pickHintKey struct{}

func withPickHint(ctx context.Context, h *pickHint) context.Context {
	return context.WithValue(ctx, pickHintKey{}, h)
}

func (h *pickHint) set(addr string) {
	h.mu.Lock()
	h.chosen = addr
	h.mu.Unlock()
}

func (h *pickHint) picked() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.chosen
}
