package goms

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestWorkers checks the pool HTTP/2 requests run on: a handler's panic is
// raised again on the caller's goroutine with the same value (net/http
// knows http.ErrAbortHandler by it), requests beyond max run on their own
// goroutine instead of waiting, and workers end once stopped.
func TestWorkers(t *testing.T) {
	p := newWorkers()
	p.max = 2
	defer p.close()

	for _, v := range []any{http.ErrAbortHandler, "boom"} {
		got := func() (got any) {
			defer func() { got = recover() }()
			p.serve(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(v) }), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			return nil
		}()
		if got != v {
			t.Errorf("panic %v came back as %v", v, got)
		}
	}

	// Four handlers that only end together: with two workers, two must
	// run on their callers' goroutines, or they would wait for ever.
	const n = 4
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	blocking := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		started.Done()
		release.Wait()
	})
	var served sync.WaitGroup
	for range n {
		served.Go(func() { p.serve(blocking, httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)) })
	}
	waitFor(t, "every handler to start", func() bool { started.Wait(); return true })
	if got := p.n.Load(); got > p.max {
		t.Errorf("%d workers, want at most %d", got, p.max)
	}
	release.Done()
	served.Wait()

	p.close()
	waitFor(t, "workers to end", func() bool { return p.n.Load() == 0 })
	ran := false
	p.serve(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !ran || p.n.Load() != 0 {
		t.Errorf("after close: ran %v, %d workers; want the handler run inline", ran, p.n.Load())
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !ok() {
			time.Sleep(5 * time.Millisecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal(errors.New("timed out waiting for " + what))
	}
}
