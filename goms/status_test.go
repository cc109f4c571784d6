package goms

import (
	"math"
	"testing"
)

// TestQuantileMs checks the quantiles of the status page against what
// Prometheus's histogram_quantile gives for the same buckets.
func TestQuantileMs(t *testing.T) {
	t.Parallel()
	bounds := []float64{.001, .01, .1}
	for _, c := range []struct {
		name    string
		q       float64
		buckets []uint64
		count   uint64
		want    float64 // ms; NaN: none
	}{
		{"within the second bucket", 0.5, []uint64{10, 90, 100}, 100, 5.5},
		{"within the last bucket", 0.99, []uint64{10, 90, 100}, 100, 91},
		{"at a bound", 0.5, []uint64{10, 10, 10}, 20, 1},
		{"beyond the last bound", 0.99, []uint64{10, 10, 10}, 20, 100},
		{"within the first bucket", 0.5, []uint64{4, 4, 4}, 4, 0.5},
		{"no calls", 0.5, []uint64{0, 0, 0}, 0, math.NaN()},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := quantileMs(c.q, bounds, c.buckets, c.count)
			switch {
			case math.IsNaN(c.want):
				if got != nil {
					t.Errorf("got %v, want none", *got)
				}
			case got == nil:
				t.Errorf("got none, want %v", c.want)
			case math.Abs(*got-c.want) > 1e-9:
				t.Errorf("got %v, want %v", *got, c.want)
			}
		})
	}
}

// TestCallCountSince checks the calls of the window: the totals now
// less those of the window's first snapshot.
func TestCallCountSince(t *testing.T) {
	t.Parallel()
	bounds := []float64{.001, .01}
	base := &callCount{count: 10, errors: 2, bounds: bounds, buckets: []uint64{10, 10}}
	now := &callCount{count: 30, errors: 7, bounds: bounds, buckets: []uint64{10, 30}}
	m := now.since(base, "/p.S/M", 10)
	if m.Calls != 20 || m.Errors != 5 || m.Rate != 2 || m.ErrorRate != 0.25 {
		t.Errorf("got %+v", m)
	}
	// The window's 20 calls all took 1 to 10 ms.
	if m.P50Ms == nil || math.Abs(*m.P50Ms-5.5) > 1e-9 {
		t.Errorf("p50 %v, want 5.5", m.P50Ms)
	}
	if m := now.since(nil, "/p.S/M", 0); m.Calls != 30 || m.Rate != 0 {
		t.Errorf("without a baseline: %+v", m)
	}
}
