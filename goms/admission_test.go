package goms

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testLimiter(t testing.TB, cfg AdaptiveLimit) *limiter {
	cfg, err := cfg.check()
	if err != nil {
		t.Fatal(err)
	}
	return newLimiter(cfg, func(int, int) {})
}

// TestLimiterSteadyLoad runs 50 callers whose calls take a steady 2ms:
// latency does not grow, so nothing may be shed. (failsafe-go's adaptive
// limiter, with its defaults and a 100ms window, shed 78% of such calls
// over 5s while its limit went 20, 8, 2, 12, 21.)
func TestLimiterSteadyLoad(t *testing.T) {
	t.Parallel()
	l := testLimiter(t, AdaptiveLimit{})
	var ok, shed atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(time.Second)
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(end) {
				if !l.acquire(PriorityNormal) {
					shed.Add(1)
					time.Sleep(2 * time.Millisecond)
					continue
				}
				start := time.Now()
				time.Sleep(2 * time.Millisecond)
				l.release(start)
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if shed.Load() > 0 {
		t.Errorf("%d of %d calls shed under steady latency; limit %d", shed.Load(), ok.Load()+shed.Load(), l.limit.Load())
	}
}

// TestLimiterFollowsLatency makes calls 10x slower: the limit must shrink
// within a second, then grow again once they are fast.
func TestLimiterFollowsLatency(t *testing.T) {
	t.Parallel()
	l := testLimiter(t, AdaptiveLimit{Window: 20 * time.Millisecond})
	var latency atomic.Int64
	latency.Store(int64(time.Millisecond))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 40 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !l.acquire(PriorityNormal) {
					time.Sleep(time.Millisecond)
					continue
				}
				start := time.Now()
				time.Sleep(time.Duration(latency.Load()))
				l.release(start)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(500 * time.Millisecond)
	before := l.limit.Load()
	latency.Store(int64(10 * time.Millisecond))
	time.Sleep(time.Second)
	slow := l.limit.Load()
	if slow > before/2 {
		t.Fatalf("the limit went from %d to %d after a second of 10x slower calls; want it halved", before, slow)
	}
	latency.Store(int64(time.Millisecond))
	time.Sleep(2 * time.Second)
	if after := l.limit.Load(); after < 2*slow {
		t.Errorf("the limit went from %d to %d in the two seconds after calls were fast again; want it doubled", slow, after)
	}
}

// TestLimiterPriorities checks where each priority stops at a limit of 8.
func TestLimiterPriorities(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p    Priority
		want int64
	}{{PrioritySheddable, 6}, {PriorityNormal, 8}, {PriorityCritical, 16}} {
		l := testLimiter(t, AdaptiveLimit{Min: 1, Max: 8})
		var n int64
		for l.acquire(c.p) {
			n++
		}
		if n != c.want {
			t.Errorf("%s: %d calls admitted at a limit of 8; want %d", c.p, n, c.want)
		}
	}
}

// BenchmarkLimiter prices acquire and release, from every CPU.
func BenchmarkLimiter(b *testing.B) {
	l := testLimiter(b, AdaptiveLimit{Max: 100000})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if l.acquire(PriorityNormal) {
				l.release(time.Now())
			}
		}
	})
}
