package goms

import (
	"math/rand/v2"
	"slices"
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

// cpuServer simulates a server on one core: each call waits about sleep
// (a dependency), then takes about cpu of the core, which the calls in
// their CPU phase share equally; both vary by up to a quarter, at random.
// Time advances in steps of simTick.
type cpuServer struct {
	l          *limiter
	rand       *rand.Rand
	sleep, cpu time.Duration
	// every stallEvery, a neighbour takes the core for stallFor
	stallEvery, stallFor time.Duration
	now                  time.Duration
	calls                []*simCall
	latencies            []time.Duration
	ok, shed             int
}

type simCall struct {
	start       time.Duration
	sleep, work time.Duration // left
}

const simTick = 100 * time.Microsecond

// call admits a call, or reports that the limiter shed it.
func (s *cpuServer) call() bool {
	if s.l != nil && !s.l.acquire(priorityNormal) {
		s.shed++
		return false
	}
	vary := func(d time.Duration) time.Duration {
		return d*3/4 + time.Duration(s.rand.Int64N(int64(d/2)))
	}
	s.calls = append(s.calls, &simCall{start: s.now, sleep: vary(s.sleep), work: vary(s.cpu)})
	return true
}

// step advances time by one tick and returns how many calls ended.
func (s *cpuServer) step() int {
	s.now += simTick
	working := 0
	for _, c := range s.calls {
		if c.sleep <= 0 {
			working++
		}
	}
	ended := 0
	kept := s.calls[:0]
	for _, c := range s.calls {
		switch {
		case c.sleep > 0:
			c.sleep -= simTick
		case s.stallEvery > 0 && s.now%s.stallEvery < s.stallFor:
		default:
			c.work -= simTick / time.Duration(working)
		}
		if c.sleep > 0 || c.work > 0 {
			kept = append(kept, c)
			continue
		}
		ended++
		s.ok++
		s.latencies = append(s.latencies, s.now-c.start)
		if s.l != nil {
			s.release(s.now - c.start)
		}
	}
	clear(s.calls[len(kept):])
	s.calls = kept
	return ended
}

// release is limiter.release on the simulated clock (Unix nanoseconds
// from 0).
func (s *cpuServer) release(latency time.Duration) {
	l := s.l
	l.inFlight.Add(-1)
	l.sum.Add(int64(latency))
	if l.count.Add(1) >= limiterMinSamples && int64(s.now)-l.begun.Load() >= l.window {
		l.update(int64(s.now))
	}
}

// closedLoop keeps n callers calling for d, each waiting 5ms after a shed
// call, and returns the calls per second served and the p99 latency.
func (s *cpuServer) closedLoop(n int, d time.Duration) (goodput float64, p99 time.Duration) {
	s.ok, s.latencies = 0, nil
	waiting := make([]time.Duration, n) // when each idle caller calls again
	busy := 0
	for i := range waiting {
		waiting[i] = s.now
	}
	end := s.now + d
	for s.now < end {
		for i := 0; i < len(waiting); i++ {
			if waiting[i] > s.now {
				continue
			}
			if s.call() {
				waiting = append(waiting[:i], waiting[i+1:]...)
				busy++
				i--
			} else {
				waiting[i] = s.now + 5*time.Millisecond
			}
		}
		for range s.step() {
			busy--
			waiting = append(waiting, s.now)
		}
	}
	slices.Sort(s.latencies)
	return float64(s.ok) / d.Seconds(), s.latencies[len(s.latencies)*99/100]
}

// openLoop sends rate calls a second for d and returns the calls per
// second served and the p99 latency.
func (s *cpuServer) openLoop(rate float64, d time.Duration) (goodput float64, p99 time.Duration) {
	s.ok, s.latencies = 0, nil
	begin, sent := s.now, 0
	for s.now < begin+d {
		for float64(sent) < (s.now-begin).Seconds()*rate {
			s.call()
			sent++
		}
		s.step()
	}
	slices.Sort(s.latencies)
	return float64(s.ok) / d.Seconds(), s.latencies[len(s.latencies)*99/100]
}

// TestLimiterKeepsCPUBusy simulates a server on one core whose calls
// wait 20ms for a dependency, then compute for 8ms, on a machine where a
// neighbour takes a third of the core, and drives it as TestOverload
// does: one caller, 8 callers in a closed loop, then 1x, 3x and 10x the
// capacity without a limit. Under overload the limit must let enough
// calls in to keep the core busy (goodput within 90% of what the server
// does without a limit), while the admitted calls keep a p99 within 3x
// that of a lone caller.
func TestLimiterKeepsCPUBusy(t *testing.T) {
	t.Parallel()
	server := func(l *limiter) *cpuServer {
		return &cpuServer{
			l: l, rand: rand.New(rand.NewPCG(1, 2)),
			sleep: 20 * time.Millisecond, cpu: 8 * time.Millisecond,
			stallEvery: 3 * time.Millisecond, stallFor: time.Millisecond,
		}
	}
	best, _ := server(nil).closedLoop(16, 10*time.Second)
	l := testLimiter(t, AdaptiveLimit{})
	l.begun.Store(0)
	s := server(l)
	_, unloaded := s.closedLoop(1, 5*time.Second)
	capacity, p99 := s.closedLoop(8, 10*time.Second)
	t.Logf("without a limit: %.1f calls/s; with it: unloaded p99 %v, 8 callers %.1f calls/s, p99 %v, limit %d", best, unloaded, capacity, p99, l.limit.Load())
	for _, x := range []float64{1, 3, 10} {
		goodput, p99 := s.openLoop(x*best, 10*time.Second)
		t.Logf("%gx: %.1f calls/s (%.2f), p99 %v (%.1fx), limit %d", x, goodput, goodput/best, p99, float64(p99)/float64(unloaded), l.limit.Load())
		if x > 1 && goodput < 0.9*best {
			t.Errorf("%gx: %.1f calls/s served; want at least 90%% of the %.1f the server serves without a limit", x, goodput, best)
		}
		if p99 > 3*unloaded {
			t.Errorf("%gx: p99 %v; want at most 3x the unloaded %v", x, p99, unloaded)
		}
	}
}
