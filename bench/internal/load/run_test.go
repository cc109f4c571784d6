package load

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCaller counts calls and fails those after failAfter, if set.
type fakeCaller struct {
	calls     atomic.Int64
	failAfter int64
}

func (f *fakeCaller) Call(context.Context) error {
	n := f.calls.Add(1)
	time.Sleep(100 * time.Microsecond)
	if f.failAfter > 0 && n > f.failAfter {
		return errors.New("boom")
	}
	return nil
}

func (f *fakeCaller) Close() {}

func TestRunCountsTheWindow(t *testing.T) {
	t.Parallel()
	c := &fakeCaller{}
	snaps := 0
	var started []int64 // calls started at each snapshot
	res, err := Run(context.Background(), c, Options{
		Concurrency: 4,
		Warmup:      20 * time.Millisecond,
		Duration:    100 * time.Millisecond,
		MaxSamples:  64,
		MaxCalls:    1 << 20,
	}, func(context.Context) (int, error) {
		snaps++
		started = append(started, c.calls.Load())
		return snaps, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Before != 1 || res.After != 2 {
		t.Errorf("snapshots = %d, %d; want 1, 2", res.Before, res.After)
	}
	// The window counts the calls that end between the snapshots: those
	// started between them, give or take the ones in flight at each.
	if len(started) == 2 {
		between := started[1] - started[0]
		if res.Calls <= 0 || res.Calls < between-4 || res.Calls > between+4 {
			t.Errorf("window calls = %d; %d started between the snapshots (4 in flight)", res.Calls, between)
		}
	}
	if res.Errors != 0 || res.FirstError != nil {
		t.Errorf("errors = %d, %v", res.Errors, res.FirstError)
	}
	if n := len(res.Latencies); n == 0 || n > 64 {
		t.Errorf("kept %d latencies, want 1 to 64", n)
	}
	if p50, p99 := res.Percentile(50), res.Percentile(99); p50 < 100*time.Microsecond || p99 < p50 {
		t.Errorf("p50 = %v, p99 = %v", p50, p99)
	}
	if res.Throughput() <= 0 {
		t.Errorf("throughput = %v", res.Throughput())
	}
}

func TestRunReportsErrors(t *testing.T) {
	t.Parallel()
	c := &fakeCaller{failAfter: 10}
	res, err := Run(context.Background(), c, Options{Concurrency: 2, Duration: 20 * time.Millisecond, MaxSamples: 8, MaxCalls: 1000},
		func(context.Context) (struct{}, error) { return struct{}{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.FirstError == nil {
		t.Errorf("errors = %d, %v; want some", res.Errors, res.FirstError)
	}
}

func TestRunStopsAtMaxCalls(t *testing.T) {
	t.Parallel()
	c := &fakeCaller{}
	_, err := Run(context.Background(), c, Options{Concurrency: 3, Duration: 50 * time.Millisecond, MaxSamples: 8, MaxCalls: 5},
		func(context.Context) (struct{}, error) { return struct{}{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.calls.Load(); got > 15 {
		t.Errorf("made %d calls, want at most 3 workers x 5", got)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0, 1}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
}
