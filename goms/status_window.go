package goms

import (
	"context"
	"slices"
	"time"
)

// The status page's window: a snapshot of the call totals every second,
// and the rates and quantiles of the last minute worked out from them the
// way Prometheus's rate and histogram_quantile do.

// statusWindow is how far back the status page's rates and quantiles look.
const statusWindow = time.Minute

// run takes a snapshot of the call totals every second until ctx ends.
// The window's first snapshot is taken at once.
func (st *statusBoard) run(ctx context.Context) {
	if len(st.reporters) == 0 {
		return
	}
	st.sample()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				st.sample()
			}
		}
	}()
}

func (st *statusBoard) sample() {
	snap := st.snapshot()
	st.mu.Lock()
	defer st.mu.Unlock()
	// Keep the newest snapshot that is at least a window old, and the
	// ones after it.
	cut := 0
	for i, s := range st.samples {
		if snap.at.Sub(s.at) >= statusWindow {
			cut = i
		}
	}
	st.samples = append(st.samples[cut:], snap)
}

// baseline returns the oldest snapshot of the window, or false when
// there is none yet.
func (st *statusBoard) baseline() (callSample, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.samples) == 0 {
		return callSample{}, false
	}
	return st.samples[0], true
}

// callKey names the calls of one procedure on one side.
type callKey struct {
	client    bool
	procedure string
}

// callSample holds the call totals of every procedure at one moment,
// summed over protocols and codes.
type callSample struct {
	at    time.Time
	calls map[callKey]*callCount
}

type callCount struct {
	count, errors uint64
	bounds        []float64
	buckets       []uint64
}

func (st *statusBoard) snapshot() callSample {
	smp := callSample{at: time.Now(), calls: make(map[callKey]*callCount)}
	for _, r := range st.reporters {
		r.ReportCalls(func(t CallTotals) {
			k := callKey{t.Client, t.Procedure}
			c := smp.calls[k]
			if c == nil {
				c = &callCount{bounds: slices.Clone(t.Bounds), buckets: make([]uint64, len(t.Bounds))}
				smp.calls[k] = c
			}
			c.count += t.Count
			if t.Code != 0 {
				c.errors += t.Count
			}
			if slices.Equal(c.bounds, t.Bounds) && len(t.Buckets) == len(c.buckets) {
				for i, n := range t.Buckets {
					c.buckets[i] += n
				}
			}
		})
	}
	return smp
}

// since returns the calls of c since base (nil: none before), over secs
// seconds.
func (c *callCount) since(base *callCount, procedure string, secs float64) methodStatus {
	m := methodStatus{Procedure: procedure, Calls: c.count, Errors: c.errors}
	buckets := slices.Clone(c.buckets)
	if base != nil {
		m.Calls -= min(base.count, c.count)
		m.Errors -= min(base.errors, c.errors)
		if slices.Equal(base.bounds, c.bounds) {
			for i := range buckets {
				buckets[i] -= min(base.buckets[i], buckets[i])
			}
		}
	}
	if secs > 0 {
		m.Rate = float64(m.Calls) / secs
	}
	if m.Calls > 0 {
		m.ErrorRate = float64(m.Errors) / float64(m.Calls)
		m.P50Ms = quantileMs(0.5, c.bounds, buckets, m.Calls)
		m.P99Ms = quantileMs(0.99, c.bounds, buckets, m.Calls)
	}
	return m
}

// quantileMs estimates the q-quantile, in milliseconds, of count
// durations whose cumulative histogram is buckets, as Prometheus's
// histogram_quantile does: linearly within the bucket the rank falls in,
// and the highest bound when it falls beyond it.
func quantileMs(q float64, bounds []float64, buckets []uint64, count uint64) *float64 {
	if len(bounds) == 0 || count == 0 {
		return nil
	}
	rank := q * float64(count)
	var v float64
	found := false
	for i, cum := range buckets {
		if float64(cum) < rank {
			continue
		}
		lower, below := 0.0, uint64(0)
		if i > 0 {
			lower, below = bounds[i-1], buckets[i-1]
		}
		v = bounds[i]
		if cum > below {
			v = lower + (bounds[i]-lower)*(rank-float64(below))/float64(cum-below)
		}
		found = true
		break
	}
	if !found {
		v = bounds[len(bounds)-1]
	}
	ms := v * 1000
	return &ms
}
