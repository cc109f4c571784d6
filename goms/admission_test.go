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
				if !l.acquire(priorityNormal) {
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

// TestLimiterFollowsLatency sends calls at a steady rate and makes them
// 10x slower, as a slow dependency would: the calls in flight grow
// tenfold, and the limit must fall to what ran fine before within a
// second, shedding the excess, and shed nothing once calls are fast.
func TestLimiterFollowsLatency(t *testing.T) {
	t.Parallel()
	l := testLimiter(t, AdaptiveLimit{Window: 20 * time.Millisecond})
	var latency, shed atomic.Int64
	latency.Store(int64(5 * time.Millisecond))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if !l.acquire(priorityNormal) {
				shed.Add(1)
				continue
			}
			wg.Go(func() {
				start := time.Now()
				time.Sleep(time.Duration(latency.Load()))
				l.release(start)
			})
		}
	})
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second)
	before := l.limit.Load()
	latency.Store(int64(50 * time.Millisecond))
	time.Sleep(time.Second)
	slow := l.limit.Load()
	if slow > before/4 || slow > 25 {
		t.Fatalf("the limit went from %d to %d after a second of 10x slower calls; want it down to what ran before", before, slow)
	}
	if shed.Load() == 0 {
		t.Errorf("nothing shed while calls were slow")
	}
	latency.Store(int64(5 * time.Millisecond))
	time.Sleep(time.Second)
	shed.Store(0)
	time.Sleep(time.Second)
	// About 1000 calls a second: a few shed as a slow spell of the
	// machine comes and goes are noise, a limit stuck low is not.
	if n := shed.Load(); n > 10 {
		t.Errorf("%d calls shed in the second after calls were fast again (limit %d, was %d)", n, l.limit.Load(), slow)
	}
}

// TestLimiterPriorities checks where each priority stops at a limit of 8.
func TestLimiterPriorities(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p    priority
		want int64
	}{{prioritySheddable, 6}, {priorityNormal, 8}, {priorityCritical, 16}} {
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
			if l.acquire(priorityNormal) {
				l.release(time.Now())
			}
		}
	})
}
