package goms_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// replicaPair is one protocol's clients of two replicas, A and B.
type replicaPair struct {
	name string
	a, b *rpcClient
}

// failoverCall is the fate of one unary call of TestStopUnderLoad.
type failoverCall struct {
	id         string
	start, end time.Time
	okA        bool         // succeeded on A
	errA       error        // A's error, when it failed there
	okB        bool         // failed on A, then succeeded on B
	errB       error        // B's error, when it failed there too
	codeA      connect.Code // code of errA
}

// watchEnd is how a Watch stream on A ended, and whether its client then
// watched B.
type watchEnd struct {
	name   string
	err    error
	at     time.Time
	events int   // received on A
	errB   error // reopening on B and receiving an event there
}

// TestStopUnderLoad sends SIGTERM to one of two replicas, each a server
// process, while clients of every protocol send it steady unary calls
// (each taking 100ms) and hold Watch streams on it. Clients retry a call
// that fails with unavailable on the other replica, as a client
// configured with two replicas does. Every unary call must succeed on A
// or fail there without being run and then succeed on B: A's access log
// must record as successful exactly the calls its clients saw succeed.
// A's streams must end with unavailable once its 1s grace period is
// over, and A must exit 0.
func TestStopUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two server processes")
	}
	t.Parallel()
	const (
		grace      = time.Second
		callDelay  = 100 * time.Millisecond
		perPair    = 2 // unary workers per protocol
		afterExit  = 500 * time.Millisecond
		exitBudget = grace + 2*time.Second + 3*time.Second // grace, goms's flush timeout, slack
	)
	args := []string{"-access-log", "-shutdown-timeout", grace.String(), "-create-delay", callDelay.String()}
	replicaA := startServerProcess(t, "A", args...)
	replicaB := startServerProcess(t, "B", args...)
	pairs := func(name string, client func(*serverProcess) *rpcClient) replicaPair {
		return replicaPair{name: name, a: client(replicaA), b: client(replicaB)}
	}
	h2c, http1 := gomstest.H2C(t), gomstest.HTTP1(t)
	protocols := []replicaPair{
		pairs("grpc-go/grpc-engine", func(p *serverProcess) *rpcClient {
			return grpcgoClient(t, "grpc-go/grpc-engine", p.addrs["grpc"])
		}),
		pairs("grpc/grpc-engine", func(p *serverProcess) *rpcClient {
			return connectClient("grpc/grpc-engine", h2c, p.url("grpc"), connect.WithGRPC())
		}),
		pairs("grpc/nethttp", func(p *serverProcess) *rpcClient {
			return connectClient("grpc/nethttp", h2c, p.url("grpc-nethttp"), connect.WithGRPC())
		}),
		pairs("connect-json/http1", func(p *serverProcess) *rpcClient {
			return connectClient("connect-json/http1", http1, p.url("http"), connect.WithProtoJSON())
		}),
		pairs("connect-proto/h2c", func(p *serverProcess) *rpcClient {
			return connectClient("connect-proto/h2c", h2c, p.url("http"))
		}),
		pairs("grpcweb/http1", func(p *serverProcess) *rpcClient {
			return connectClient("grpcweb/http1", http1, p.url("http"), connect.WithGRPCWeb())
		}),
	}

	// Unary workers: A first, B when A says unavailable.
	loadCtx, stopLoad := context.WithCancel(t.Context())
	defer stopLoad()
	var (
		mu       sync.Mutex
		calls    []*failoverCall
		workers  sync.WaitGroup
		watching sync.WaitGroup
	)
	for _, p := range protocols {
		for w := range perPair {
			workers.Go(func() {
				for n := 0; n < maxIterations && loadCtx.Err() == nil; n++ {
					c := &failoverCall{id: fmt.Sprintf("%s-%d-%d", p.name, w, n), start: time.Now()}
					ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
					_, c.errA = p.a.create(ctx, c.id, c.id)
					c.okA = c.errA == nil
					if !c.okA {
						c.codeA = rpcCode(c.errA)
						// unavailable is the server's word; canceled with
						// the caller's context alive is connect-go's code
						// for a connection that broke under the request
						// (a kept-alive HTTP/1.1 connection the server
						// closed as the request was written: EPIPE).
						// Either way the call goes to B, and the access
						// log check below proves A did not run it.
						if c.codeA == connect.CodeUnavailable || c.codeA == connect.CodeCanceled && ctx.Err() == nil {
							_, c.errB = p.b.create(ctx, c.id, c.id)
							c.okB = c.errB == nil
						}
					}
					cancel()
					c.end = time.Now()
					mu.Lock()
					calls = append(calls, c)
					mu.Unlock()
				}
			})
		}
	}

	// Watch streams on A, each proven live by an event.
	watchers := []replicaPair{protocols[0], protocols[2], protocols[3], protocols[4], protocols[5]}
	live := make(chan string, len(watchers))
	ends := make(chan watchEnd, len(watchers))
	for _, p := range watchers {
		watching.Go(func() {
			end := watchEnd{name: p.name}
			defer func() { ends <- end }()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			recv, closeStream, err := p.a.watch(ctx)
			if err != nil {
				end.err = err
				live <- p.name
				return
			}
			for range maxIterations {
				if _, end.err = recv(); end.err != nil {
					break
				}
				if end.events++; end.events == 1 {
					live <- p.name
				}
			}
			end.at = time.Now()
			closeStream()
			if end.events == 0 {
				live <- p.name
			}
			// Fail over: B serves the same feed.
			recv, closeStream, err = p.b.watch(ctx)
			if err != nil {
				end.errB = err
				return
			}
			defer closeStream()
			_, end.errB = recv()
		})
	}
	for range watchers {
		select {
		case <-live:
		case <-time.After(30 * time.Second):
			t.Fatal("the Watch streams on A received no event in 30s")
		}
	}
	time.Sleep(500 * time.Millisecond)

	sigterm := time.Now()
	exitTime, exitErr := replicaA.stop(t, exitBudget+5*time.Second)
	watching.Wait() // the streams failed over to B, which the load feeds
	time.Sleep(afterExit)
	stopLoad()
	workers.Wait()
	close(ends)
	if _, err := replicaB.stop(t, exitBudget+5*time.Second); err != nil {
		t.Errorf("B exited with %v", err)
	}

	// Every call succeeded on A or B; none is lost.
	logA, logB := replicaA.accessLog(t), replicaB.accessLog(t)
	var okA, inFlight, failedOver int
	codesA := make(map[connect.Code]int)
	var lost []string
	for _, c := range calls {
		switch {
		case c.okA:
			okA++
			if c.start.Before(sigterm) && c.end.After(sigterm) {
				inFlight++
			}
			if r, ok := logA[c.id]; !ok || r.Code != "ok" {
				t.Errorf("%s succeeded on A, whose access log says %+v", c.id, r)
			}
		case c.okB:
			failedOver++
			codesA[c.codeA]++
			if r, ok := logA[c.id]; ok && r.Code == "ok" {
				t.Errorf("%s failed on A with %v, yet A ran it: the response was lost", c.id, c.errA)
			}
			if r := logB[c.id]; r.Code != "ok" {
				t.Errorf("%s succeeded on B, whose access log says %+v", c.id, r)
			}
		default:
			lost = append(lost, fmt.Sprintf("%s: A: %v; B: %v", c.id, c.errA, c.errB))
		}
	}
	// No call ran on A without its caller learning of it.
	for id, r := range logA {
		if r.Code == "ok" && strings.Contains(r.Procedure, "/Create") && !slices.ContainsFunc(calls, func(c *failoverCall) bool { return c.id == id && c.okA }) {
			t.Errorf("A ran %s, which its caller did not see succeed there", id)
		}
	}
	t.Logf("SIGTERM with %d unary callers: %d calls sent, %d succeeded on A (%d of them in flight at SIGTERM), %d failed over to B (A's codes: %v), %d lost",
		len(protocols)*perPair, len(calls), okA, inFlight, failedOver, codesA, len(lost))
	t.Logf("A exited %v after SIGTERM with %v", exitTime.Round(10*time.Millisecond), exitErr)
	if len(lost) > 0 {
		t.Errorf("%d calls lost:\n\t%s", len(lost), strings.Join(lost, "\n\t"))
	}
	if inFlight == 0 || failedOver == 0 {
		t.Errorf("%d calls in flight at SIGTERM and %d failed over: the test did not test the shutdown", inFlight, failedOver)
	}
	if exitErr != nil {
		t.Errorf("A exited with %v, want 0", exitErr)
	}
	if exitTime < grace || exitTime > exitBudget {
		t.Errorf("A exited %v after SIGTERM, want after its grace period of %v with streams open and within %v", exitTime, grace, exitBudget)
	}

	var unavailable int
	for end := range ends {
		switch {
		case rpcCode(end.err) != connect.CodeUnavailable:
			t.Errorf("%s: the Watch stream on A ended with %v after %d events, want unavailable", end.name, end.err, end.events)
		case end.at.Sub(sigterm) < grace*9/10:
			t.Errorf("%s: the Watch stream on A ended %v after SIGTERM, before the grace period of %v", end.name, end.at.Sub(sigterm), grace)
		default:
			unavailable++
		}
		if end.errB != nil {
			t.Errorf("%s: watching B after A: %v", end.name, end.errB)
		}
	}
	t.Logf("%d of %d Watch streams on A ended with unavailable, then watched B", unavailable, len(watchers))
}
