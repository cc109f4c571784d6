package goms

import (
	"testing"
	"time"
)

// TestRetryBudgetShared checks that retries and hedges draw from one
// budget: the attempts beyond the first of each call, whatever sent them,
// leave room for hedges only up to ratio of the calls plus the minimum.
func TestRetryBudgetShared(t *testing.T) {
	b := &retryBudget{ratio: 0.1}
	now := time.Now().Unix()
	for range 100 {
		b.earn(now)
		b.attempt(now)
	}
	// 100 calls at 0.1, plus 1 a second over 10 s: 20 extra attempts.
	room := 0
	for b.take() {
		b.attempt(now) // the hedge's attempt
		room++
		if room > 100 {
			break
		}
	}
	if room != 20 {
		t.Fatalf("hedges allowed after 100 calls: %d, want 20", room)
	}
	// Retries that grpc-go sent use the budget up as well: after 10 more
	// calls, each retried once, no hedge fits (20 + 10 extra against 21).
	for range 10 {
		b.earn(now)
		b.attempt(now)
		b.attempt(now)
	}
	if b.take() {
		t.Fatal("a hedge fits although retries used the budget up")
	}
	// New calls earn room back.
	for range 100 {
		b.earn(now)
		b.attempt(now)
	}
	if !b.take() {
		t.Fatal("no hedge fits after 100 calls without extra attempts")
	}
}
