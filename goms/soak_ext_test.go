package goms_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// soakEnv names the environment variable that sets how long TestSoak
// loads its server, as a Go duration: `make soak` sets 60s.
const soakEnv = "GOMS_SOAK"

// defaultSoak keeps TestSoak short in `make test`.
const defaultSoak = 5 * time.Second

func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(soakEnv)
	if v == "" {
		return defaultSoak
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		t.Fatalf("%s=%q: want a duration of at least 1s", soakEnv, v)
	}
	return d
}

// soakLoad is the traffic of TestSoak: unary workers and Watch streams,
// which a sample pauses between calls so that every sample sees the
// server with the same connections and no call in flight.
type soakLoad struct {
	pause   sync.RWMutex
	calls   atomic.Int64
	streams atomic.Int64
	events  atomic.Int64
	errs    errorSample
}

// unary calls c in a loop until ctx ends: Get and List of an existing
// item, and every fourth time a Create and a Delete, which keep the
// store's size flat and feed the Watch streams.
func (l *soakLoad) unary(ctx context.Context, t *testing.T, c *rpcClient, id string) {
	call := func(what string, f func(context.Context) error) {
		callCtx, cancel := context.WithTimeout(t.Context(), callTimeout)
		defer cancel()
		l.calls.Add(1)
		if err := f(callCtx); err != nil {
			l.errs.add("%s %s: %v", c.name, what, err)
		}
	}
	for i := 0; i < maxIterations && ctx.Err() == nil; i++ {
		l.pause.RLock()
		call("Get", func(ctx context.Context) error { return c.get(ctx, id) })
		call("List", c.list)
		if i%4 == 0 {
			var created string
			call("Create", func(ctx context.Context) error {
				item, err := c.create(ctx, fmt.Sprintf("soak %s %d", c.name, i), "")
				created = item.GetId()
				return err
			})
			if created != "" {
				call("Delete", func(ctx context.Context) error { return c.delete(ctx, created) })
			}
		}
		l.pause.RUnlock()
	}
}

// watch opens Watch streams of c one after the other until ctx ends, each
// read for a moment and then cancelled by its deadline.
func (l *soakLoad) watch(ctx context.Context, t *testing.T, c *rpcClient) {
	const streamLife = 300 * time.Millisecond
	for i := 0; i < maxIterations && ctx.Err() == nil; i++ {
		l.pause.RLock()
		func() {
			streamCtx, cancel := context.WithTimeout(t.Context(), streamLife)
			defer cancel()
			l.streams.Add(1)
			recv, closeStream, err := c.watch(streamCtx)
			if err != nil {
				l.errs.add("%s Watch: %v", c.name, err)
				return
			}
			defer closeStream()
			for range maxIterations {
				_, err := recv()
				if err == nil {
					l.events.Add(1)
					continue
				}
				// The deadline ends the stream, on the client's clock or on
				// the server's, which got it in a timeout header: any other
				// end is an error.
				switch code := rpcCode(err); {
				case code == connect.CodeDeadlineExceeded:
				case code == connect.CodeCanceled && streamCtx.Err() != nil:
				default:
					l.errs.add("%s Watch: %v (code %v)", c.name, err, code)
				}
				return
			}
		}()
		l.pause.RUnlock()
	}
}

// soakSample is what a sample of the server process reads.
type soakSample struct {
	at         time.Duration
	rss, heap  int64
	goroutines int
}

// sample pauses the load, lets the calls in flight finish, and reads the
// server's figures.
func (l *soakLoad) sample(t *testing.T, srv *serverProcess, start time.Time) soakSample {
	l.pause.Lock()
	defer l.pause.Unlock()
	time.Sleep(200 * time.Millisecond) // handler goroutines end after their responses
	s := soakSample{at: time.Since(start).Round(100 * time.Millisecond), rss: srv.rss(t), goroutines: srv.goroutines(t)}
	s.heap = srv.heapAlloc(t)
	return s
}

func (s soakSample) String() string {
	return fmt.Sprintf("RSS %s, heap %s, %d goroutines", mib(s.rss), mib(s.heap), s.goroutines)
}

// TestSoak loads a server process with every protocol on every kind of
// listener (gRPC on both engines, from grpc-go and connect-go; Connect
// JSON and binary and gRPC-Web over HTTP/1.1 and h2c) and with Watch
// streams opened and closed, for GOMS_SOAK (5s by default). No call may
// fail, and the server's RSS and goroutine count must stay flat after the
// warm-up. The server is built without the race detector, so that its
// figures are a real server's.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server process under load")
	}
	t.Parallel()
	d := soakDuration(t)
	warmUp := max(time.Second, d/6)
	srv := startServerProcess(t, "soak")
	h2c, http1 := gomstest.H2C(t), gomstest.HTTP1(t)
	grpcEngine := grpcgoClient(t, "grpc-go/grpc-engine", srv.addrs["grpc"])
	connectJSON := connectClient("connect-json/http1", http1, srv.url("http"), connect.WithProtoJSON())
	grpcNetHTTP := connectClient("grpc/nethttp", h2c, srv.url("grpc-nethttp"), connect.WithGRPC())
	grpcWebJSON := connectClient("grpcweb-json/h2c", h2c, srv.url("http"), connect.WithGRPCWeb(), connect.WithProtoJSON())
	clients := []*rpcClient{
		grpcEngine,
		grpcgoClient(t, "grpc-go/nethttp", srv.addrs["grpc-nethttp"]),
		connectClient("grpc/grpc-engine", h2c, srv.url("grpc"), connect.WithGRPC()),
		grpcNetHTTP,
		connectJSON,
		connectClient("connect-proto/h2c", h2c, srv.url("http")),
		connectClient("grpcweb/http1", http1, srv.url("http"), connect.WithGRPCWeb()),
		grpcWebJSON,
	}
	watchers := []*rpcClient{grpcEngine, grpcNetHTTP, connectJSON, grpcWebJSON}

	// One item for every Get, and a first call on every client, so that
	// the first sample sees every connection open.
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	item, err := clients[0].create(ctx, "soak", "")
	cancel()
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	id := item.GetId()
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		err := c.get(ctx, id)
		cancel()
		if err != nil {
			t.Fatalf("%s: first Get: %v", c.name, err)
		}
	}

	var l soakLoad
	start := time.Now()
	before := l.sample(t, srv, start)
	loadCtx, stopLoad := context.WithTimeout(t.Context(), d)
	defer stopLoad()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { l.unary(loadCtx, t, c, id) })
	}
	for _, c := range watchers {
		wg.Go(func() { l.watch(loadCtx, t, c) })
	}

	// Samples at the end of the warm-up, then five more up to the end.
	var samples []soakSample
	for i := range 6 {
		at := warmUp + time.Duration(i)*(d-warmUp)/5
		if i == 5 {
			at = d - 300*time.Millisecond // before the load stops
		}
		time.Sleep(time.Until(start.Add(at)))
		samples = append(samples, l.sample(t, srv, start))
	}
	wg.Wait()
	elapsed := time.Since(start)
	warm, end := samples[0], samples[len(samples)-1]

	// Once the load stops, the server's goroutines go back to what they
	// were with the same connections open and no call in flight.
	var after soakSample
	for deadline := time.Now().Add(5 * time.Second); ; {
		after = l.sample(t, srv, start)
		if after.goroutines <= before.goroutines+10 || time.Now().After(deadline) {
			break
		}
	}

	calls, streams := l.calls.Load(), l.streams.Load()
	t.Logf("soak %v: %d calls (%.0f/s), %d Watch streams with %d events, %d errors",
		d, calls, float64(calls)/elapsed.Seconds(), streams, l.events.Load(), l.errs.count())
	t.Logf("before the load: %v", before)
	for _, s := range samples {
		t.Logf("at %v: %v", s.at, s)
	}
	t.Logf("after the load: %v", after)
	rssMax := slices.MaxFunc(samples, func(a, b soakSample) int { return int(a.rss - b.rss) }).rss
	t.Logf("RSS after warm-up %s, at the end %s (%+.1f MiB), max %s; goroutines %d -> %d",
		mib(warm.rss), mib(end.rss), float64(end.rss-warm.rss)/(1<<20), mib(rssMax), warm.goroutines, end.goroutines)

	if n := l.errs.count(); n > 0 {
		t.Errorf("%d calls failed, among them:%v", n, &l.errs)
	}
	if calls == 0 || streams == 0 || l.events.Load() == 0 {
		t.Errorf("the load made %d calls and %d streams with %d events", calls, streams, l.events.Load())
	}
	if end.rss > warm.rss+20<<20 {
		t.Errorf("RSS grew from %s after the warm-up to %s at the end", mib(warm.rss), mib(end.rss))
	}
	if end.goroutines > warm.goroutines+20 {
		t.Errorf("goroutines grew from %d after the warm-up to %d at the end", warm.goroutines, end.goroutines)
	}
	if after.goroutines > before.goroutines+10 {
		t.Errorf("%d goroutines after the load, %d before it", after.goroutines, before.goroutines)
	}
}
