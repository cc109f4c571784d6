package clustertest_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// Load bounds: every load runs at most loadMaxDuration and loadMaxCalls
// calls, whatever the scenario waits for.
const (
	loadWorkers     = 4
	loadPause       = 10 * time.Millisecond // between two calls of a worker
	loadCallTimeout = 5 * time.Second
	loadMaxDuration = 4 * time.Minute
	loadMaxCalls    = 200_000
)

// load calls the goms and child services through the edge Service with
// loadWorkers workers, each its own way: Connect JSON over HTTP/1.1 with
// HTTP GET (the methods called have no side effects), gRPC over h2c,
// Connect (binary, POST) over h2c, gRPC-Web over h2c; it counts every call.
//
// No worker POSTs over HTTP/1.1: a POST written on a kept-alive connection
// just as a stopping server closes it fails with EOF, and net/http replays
// only requests that are safe to send twice (a GET; over HTTP/2, any
// request the server's GOAWAY says it did not take).
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time
	calls  atomic.Int64

	mu        sync.Mutex
	latencies []time.Duration
	failures  []failure
}

type failure struct {
	at  time.Time
	err string
}

// loadResult is what a load did.
type loadResult struct {
	Calls, Failed int
	P50, P99      time.Duration
	Elapsed       time.Duration
	Errors        map[string]int // failure messages and their counts
	Failures      []failure
}

func (r loadResult) String() string {
	return fmt.Sprintf("calls %d, failed %d, p50 %v, p99 %v in %v (%.0f calls/s)",
		r.Calls, r.Failed, r.P50.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond),
		r.Elapsed.Round(100*time.Millisecond), float64(r.Calls)/r.Elapsed.Seconds())
}

func startLoad(t *testing.T, baseURL string) *load {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), loadMaxDuration)
	l := &load{cancel: cancel, start: time.Now()}
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	http1 := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: loadWorkers}}
	h2c := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, Protocols: unencryptedHTTP2()}}
	for w := range loadWorkers {
		client, opts := h2c, []connect.ClientOption(nil)
		switch w % 4 {
		case 0:
			client, opts = http1, []connect.ClientOption{connect.WithProtoJSON(), connect.WithHTTPGet()}
		case 1:
			opts = []connect.ClientOption{connect.WithGRPC()}
		case 3:
			opts = []connect.ClientOption{connect.WithGRPCWeb()}
		}
		items := gomsv1connect.NewGoMsServiceClient(client, baseURL, opts...)
		children := childv1connect.NewChildServiceClient(client, baseURL, opts...)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if l.calls.Add(1) > loadMaxCalls {
					l.calls.Add(-1)
					return
				}
				began := time.Now()
				callCtx, callCancel := context.WithTimeout(ctx, loadCallTimeout)
				var err error
				if i%2 == 0 {
					_, err = items.List(callCtx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 10}))
				} else {
					_, err = children.List(callCtx, connect.NewRequest(&childv1.ListRequest{PageSize: 10}))
				}
				callCancel()
				if ctx.Err() != nil && err != nil {
					l.calls.Add(-1) // cut off by the end of the load, not failed
					return
				}
				l.record(began, err)
				select {
				case <-ctx.Done():
				case <-time.After(loadPause):
				}
			}
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *load) record(began time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures = append(l.failures, failure{at: time.Now(), err: err.Error()})
		return
	}
	l.latencies = append(l.latencies, time.Since(began))
}

// stop ends the load and reports it.
func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := loadResult{
		Calls: int(l.calls.Load()), Failed: len(l.failures), Elapsed: time.Since(l.start),
		Errors: map[string]int{}, Failures: slices.Clone(l.failures),
	}
	for _, f := range l.failures {
		r.Errors[f.err]++
	}
	lat := slices.Clone(l.latencies)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		r.P50 = lat[len(lat)*50/100]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r
}

// failedSince counts the failures after t.
func (l *load) failedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, f := range l.failures {
		if f.at.After(t) {
			n++
		}
	}
	return n
}

func unencryptedHTTP2() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// errorSummary lists a result's failure messages, most frequent first.
func errorSummary(r loadResult) string {
	type kv struct {
		msg string
		n   int
	}
	var all []kv
	for m, n := range r.Errors {
		all = append(all, kv{m, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var b strings.Builder
	for _, e := range all {
		fmt.Fprintf(&b, "\n\t%d× %s", e.n, e.msg)
	}
	return b.String()
}
