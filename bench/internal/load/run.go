package load

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options sets the shape of one run.
type Options struct {
	// Concurrency is the number of workers, each with one call in flight.
	Concurrency int
	// Warmup is the time the workers run before measuring starts.
	Warmup time.Duration
	// Duration is the measured time.
	Duration time.Duration
	// MaxSamples bounds the latencies kept across all workers; past it,
	// each worker keeps a uniform sample of its calls.
	MaxSamples int
	// MaxCalls bounds the calls of one worker, whatever the time.
	MaxCalls int
}

// Result is what one run measured between its two snapshots.
type Result[S any] struct {
	// Calls is the number of calls completed in the window.
	Calls int64
	// Elapsed is the length of the window.
	Elapsed time.Duration
	// Before and After are the snapshots that open and close the window.
	Before, After S
	// Latencies holds the sampled latencies of the window, sorted.
	Latencies []time.Duration
	// Errors counts failed calls during warm-up and window; FirstError
	// is the first of them.
	Errors     int64
	FirstError error
}

// Throughput returns calls per second.
func (r Result[S]) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Percentile returns the latency below which p percent of the sampled
// calls fall (nearest rank), or 0 without samples.
func (r Result[S]) Percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// stopGrace is how long workers get to finish their last call before
// their context is cancelled.
const stopGrace = 10 * time.Second

// Run runs the workers of o against c: warm-up, then a window opened and
// closed by a call to snapshot (the server's counters), then stop. The
// window's calls are counted between the two snapshots, so that the
// counters and the calls cover the same time.
func Run[S any](ctx context.Context, c Caller, o Options, snapshot func(context.Context) (S, error)) (Result[S], error) {
	var res Result[S]
	if o.Concurrency < 1 || o.Duration <= 0 || o.MaxSamples < 1 || o.MaxCalls < 1 {
		return res, fmt.Errorf("load: invalid options %+v", o)
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		phase     atomic.Int32
		completed atomic.Int64
		failed    atomic.Int64
		errOnce   sync.Once
		firstErr  error
		wg        sync.WaitGroup
	)
	perWorker := max(o.MaxSamples/o.Concurrency, 1)
	samples := make([][]time.Duration, o.Concurrency)
	for w := range o.Concurrency {
		samples[w] = make([]time.Duration, 0, perWorker)
		wg.Go(func() {
			rng := uint64(w)*0x9e3779b97f4a7c15 + 1
			seen := 0 // calls of the window, for reservoir sampling
			kept := samples[w]
			for range o.MaxCalls {
				p := phase.Load()
				if p == phaseStop {
					break
				}
				start := time.Now()
				err := c.Call(callCtx)
				elapsed := time.Since(start)
				if err != nil {
					if phase.Load() == phaseStop {
						break
					}
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					if callCtx.Err() != nil {
						break
					}
					continue
				}
				completed.Add(1)
				if p != phaseMeasure || phase.Load() != phaseMeasure {
					continue
				}
				seen++
				if len(kept) < cap(kept) {
					kept = append(kept, elapsed)
					continue
				}
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				if j := rng % uint64(seen); j < uint64(len(kept)) {
					kept[j] = elapsed
				}
			}
			samples[w] = kept
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stop := func() {
		phase.Store(phaseStop)
		select {
		case <-done:
		case <-time.After(stopGrace):
			cancel()
			<-done
		}
	}

	if err := Sleep(ctx, o.Warmup); err != nil {
		stop()
		return res, err
	}
	phase.Store(phaseMeasure)
	before, err := snapshot(ctx)
	if err != nil {
		stop()
		return res, fmt.Errorf("load: opening snapshot: %w", err)
	}
	c0, t0 := completed.Load(), time.Now()
	if err := Sleep(ctx, o.Duration); err != nil {
		stop()
		return res, err
	}
	after, err := snapshot(ctx)
	if err != nil {
		stop()
		return res, fmt.Errorf("load: closing snapshot: %w", err)
	}
	c1, t1 := completed.Load(), time.Now()
	stop()

	res.Calls, res.Elapsed = c1-c0, t1.Sub(t0)
	res.Before, res.After = before, after
	res.Errors, res.FirstError = failed.Load(), firstErr
	for _, s := range samples {
		res.Latencies = append(res.Latencies, s...)
	}
	slices.Sort(res.Latencies)
	if res.Calls == 0 && res.FirstError == nil {
		res.FirstError = errors.New("load: no call completed in the window")
	}
	return res, nil
}

func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
