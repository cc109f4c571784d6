package goms

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The policies of a remote's calls that grpc-go has no counterpart of: the
// latency window behind hedge delays, the budget of hedges, and adaptive
// throttling.

// latencyWindow keeps the latest latencies of a method's calls and their
// 95th percentile, worked out again every latencyRecompute calls.
type latencyWindow struct {
	mu      sync.Mutex
	samples [latencySamples]time.Duration
	n       int // samples taken in all
	p       atomic.Int64
}

const (
	latencySamples   = 256
	latencyMinimum   = 50 // samples before the percentile is trusted
	latencyRecompute = 32
	minHedgeDelay    = time.Millisecond
)

func (w *latencyWindow) add(d time.Duration) {
	w.mu.Lock()
	w.samples[w.n%latencySamples] = d
	w.n++
	if w.n < latencyMinimum || w.n%latencyRecompute != 0 {
		w.mu.Unlock()
		return
	}
	s := slices.Clone(w.samples[:min(w.n, latencySamples)])
	w.mu.Unlock()
	slices.Sort(s)
	w.p.Store(int64(max(s[len(s)*95/100], minHedgeDelay)))
}

func (w *latencyWindow) p95() time.Duration { return time.Duration(w.p.Load()) }

// retryBudget bounds the attempts beyond the first of a remote's calls,
// hedges and retries together, as Linkerd's retry budget does: over the
// last budgetSeconds, extra attempts may add ratio of the calls, plus
// budgetMinPerSecond a second so that a remote with few calls can still
// hedge. grpc-go sends the retries (under its own retry throttling); they
// count against the budget, and a hedge is sent only while it has room.
type retryBudget struct {
	ratio   float64
	mu      sync.Mutex
	buckets [budgetSeconds]struct {
		at              int64 // second
		calls, attempts int64
	}
}

const (
	budgetSeconds      = 10
	budgetMinPerSecond = 1
)

func (b *retryBudget) bucket(now int64) *struct {
	at              int64
	calls, attempts int64
} {
	k := &b.buckets[now%budgetSeconds]
	if k.at != now {
		k.at, k.calls, k.attempts = now, 0, 0
	}
	return k
}

// earn counts a call made in second now.
func (b *retryBudget) earn(now int64) {
	b.mu.Lock()
	b.bucket(now).calls++
	b.mu.Unlock()
}

// attempt counts an attempt sent to an endpoint in second now: the first
// of its call, a retry, or a hedge.
func (b *retryBudget) attempt(now int64) {
	b.mu.Lock()
	b.bucket(now).attempts++
	b.mu.Unlock()
}

// take tells whether one more attempt (a hedge) fits in the budget.
func (b *retryBudget) take() bool {
	now := time.Now().Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	var calls, attempts int64
	for i := range b.buckets {
		if k := &b.buckets[i]; now-k.at < budgetSeconds {
			calls += k.calls
			attempts += k.attempts
		}
	}
	extra := max(0, attempts-calls)
	return float64(extra+1) <= b.ratio*float64(calls)+budgetMinPerSecond*budgetSeconds
}

// throttle is client-side adaptive throttling (Google SRE book, "Handling
// Overload"): when the remote turns down (unavailable) most of the calls
// sent, calls fail here, at once, with probability (requests - K·accepts) / (requests + 1)
// over the last five seconds, so that a failing remote is not hammered
// and callers learn at once.
type throttle struct {
	mu      sync.Mutex
	buckets [throttleBuckets]struct {
		at                 int64 // second
		requests, accepted int64
	}
}

const (
	throttleK       = 2
	throttleBuckets = 5 // one a second: a 5s window
	// throttlePadding softens the probability at low volume, and below
	// throttleMinRequests calls in the window nothing is throttled: a
	// couple of failures say little.
	throttlePadding     = 10
	throttleMinRequests = 20
)

var errThrottled = errors.New("throttled: most recent calls failed, so this one was not sent")

func (t *throttle) counts(now int64) (requests, accepted int64) {
	for i := range t.buckets {
		if b := &t.buckets[i]; now-b.at < throttleBuckets {
			requests += b.requests
			accepted += b.accepted
		}
	}
	return requests, accepted
}

func (t *throttle) bucket(now int64) *struct {
	at                 int64
	requests, accepted int64
} {
	b := &t.buckets[now%throttleBuckets]
	if b.at != now {
		b.at, b.requests, b.accepted = now, 0, 0
	}
	return b
}

// admit tells whether to send a call made in second now; a call not sent
// counts as a request that was not accepted.
func (t *throttle) admit(now int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	requests, accepted := t.counts(now)
	if requests < throttleMinRequests {
		return nil
	}
	p := (float64(requests) - throttleK*float64(accepted)) / float64(requests+throttlePadding)
	if p > 0 && rand.Float64() < p {
		t.bucket(now).requests++
		return errThrottled
	}
	return nil
}

// record counts a sent call, as accepted unless the remote failed it.
func (t *throttle) record(err error) {
	// Only unavailable (no connection, a draining or overloaded server)
	// says the remote turned the call down; other codes are answers (a
	// resource_exhausted is as often a caller's quota or a message too
	// large).
	failed := status.Code(err) == codes.Unavailable
	now := time.Now().Unix()
	t.mu.Lock()
	b := t.bucket(now)
	b.requests++
	if !failed {
		b.accepted++
	}
	t.mu.Unlock()
}
