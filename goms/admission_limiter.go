package goms

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// limiter is an adaptive concurrency limit in the manner of Netflix's
// gradient limits. Each window, the mean latency of the calls that ended
// (short) is compared with its long-run average (long). When short stays
// above both tolerance × long and long + slack (allowed) for slowWindows
// in a row, or goes above twice allowed, the limit shrinks to the calls
// that ran in the window times the gradient, allowed over short (half at
// most), plus the square root of those calls as headroom for a queue (as
// Gradient2), but not below the most calls that ran with good latency in
// the last 30 seconds; otherwise it grows by a little headroom, while
// calls use at least half of it. The long-run average learns slowly from
// windows at the limit, so that sustained overload does not teach it that
// slow is normal, and drops fast when calls get faster.
type limiter struct {
	minLimit, maxLimit float64
	tolerance          float64
	slack              float64 // nanoseconds
	window             int64   // nanoseconds
	onChange           func(old, limit int)

	limit    atomic.Int64
	inFlight atomic.Int64
	// The current window: latencies summed, calls ended, the most calls in
	// flight, calls shed, and when it began (Unix nanoseconds).
	sum, count, peak, shed, begun atomic.Int64

	mu      sync.Mutex // held by the call that closes a window
	est     float64    // the limit, unrounded
	long    float64    // long-run mean latency, nanoseconds
	windows int
	slow    int // windows in a row slower than tolerance allows
	// good holds, for each of the last len(good) seconds, the most calls
	// in flight on average in a window whose latency was within
	// tolerance: the limit
	// does not shrink below what ran fine a moment ago, so that latency
	// that grows while concurrency does not (a neighbour on the machine,
	// a collection) sheds nothing.
	good [30]struct {
		second int64
		peak   int64
	}
}

// slowWindows is how many windows in a row must be slow before the limit
// shrinks, unless one is twice slower than allowed: a spike shorter than
// that (a collection, a connection opening, a neighbour on the machine)
// sheds nothing.
const slowWindows = 3

// limiterMinSamples is how many calls a window needs to update the limit.
const limiterMinSamples = 10

func newLimiter(cfg AdaptiveLimit, onChange func(old, limit int)) *limiter {
	l := &limiter{
		minLimit:  float64(cfg.Min),
		maxLimit:  float64(cfg.Max),
		tolerance: cfg.Tolerance,
		slack:     float64(cfg.Slack),
		window:    int64(cfg.Window),
		onChange:  onChange,
		est:       float64(cfg.Max),
	}
	l.limit.Store(int64(cfg.Max))
	l.begun.Store(time.Now().UnixNano())
	return l
}

// acquire takes a place for a call of priority p, or reports that there is
// none.
func (l *limiter) acquire(p priority) bool {
	limit := l.limit.Load()
	switch p {
	case prioritySheddable:
		limit = max(1, limit*3/4)
	case priorityCritical:
		limit *= 2
	}
	n := l.inFlight.Add(1)
	if n > limit {
		l.inFlight.Add(-1)
		l.shed.Add(1)
		return false
	}
	for {
		peak := l.peak.Load()
		if n <= peak || l.peak.CompareAndSwap(peak, n) {
			return true
		}
	}
}

// release ends a call that started at start, and closes the window when it
// is due.
func (l *limiter) release(start time.Time) {
	now := time.Now()
	l.inFlight.Add(-1)
	l.sum.Add(int64(now.Sub(start)))
	count := l.count.Add(1)
	if count >= limiterMinSamples && now.UnixNano()-l.begun.Load() >= l.window && l.mu.TryLock() {
		l.update(now.UnixNano())
		l.mu.Unlock()
	}
}

// update closes the window. Called with l.mu held.
func (l *limiter) update(now int64) {
	if now-l.begun.Load() < l.window {
		return // another call closed it
	}
	began := l.begun.Swap(now)
	count := l.count.Swap(0)
	sum := l.sum.Swap(0)
	peak := l.peak.Swap(l.inFlight.Load())
	shed := l.shed.Swap(0)
	if count == 0 {
		return
	}
	short := float64(sum) / float64(count)
	atLimit := shed > 0 || float64(peak) >= l.est
	l.windows++
	switch {
	case l.windows <= 10:
		// Warm up: the plain mean of the first windows.
		l.long += (short - l.long) / float64(l.windows)
	case short < l.long:
		l.long += (short - l.long) * 0.1
	case atLimit:
		l.long += (short - l.long) / 6000
	default:
		l.long += (short - l.long) / 600
	}
	allowed := max(l.tolerance*l.long, l.long+l.slack)
	gradient := max(0.5, min(1, allowed/short))
	est := l.est
	second := now / int64(time.Second)
	if gradient < 1 {
		l.slow++
	} else {
		l.slow = 0
		// The calls in flight on average over the window (Little's law):
		// its peak may come from its last moment, after the latencies
		// measured.
		ran := sum / max(1, now-began)
		g := &l.good[second%int64(len(l.good))]
		if g.second != second {
			g.second, g.peak = second, 0
		}
		g.peak = max(g.peak, ran)
	}
	switch {
	case gradient < 1 && l.slow < slowWindows && short < 2*allowed:
		// Slower, but not for long enough to tell from a spike; twice
		// slower than allowed needs no confirmation: a queue that grew
		// that much in a window only grows while the limit waits.
		return
	case gradient < 1:
		// Slower: shrink from what ran in the window by the gradient, but
		// keep its square root as headroom, as Netflix's Gradient2 limit
		// does: a busy server needs a few calls queued to keep its CPU
		// busy, so the limit only shrinks once latency says more than
		// that queue waits. And not below what ran fine in the last
		// seconds.
		floor := int64(0)
		for _, g := range l.good {
			if second-g.second < int64(len(l.good)) {
				floor = max(floor, g.peak)
			}
		}
		ran := min(est, float64(peak))
		est = max(float64(floor), min(est, ran*gradient+math.Sqrt(ran)))
	case atLimit || (l.windows > 10 && float64(peak) >= est/2):
		// As fast as usual and used: grow by a little headroom. Calls
		// using less than half the limit say nothing about it.
		est += max(1, math.Sqrt(est)/2)
	default:
		return
	}
	est = max(l.minLimit, min(l.maxLimit, est))
	l.est = est
	old := int(l.limit.Load())
	limit := int(est)
	if limit != old {
		l.limit.Store(int64(limit))
		l.onChange(old, limit)
	}
}
