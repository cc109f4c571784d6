package goms_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// faultPhase is how long each phase of TestRemoteFaults lasts: 2s in
// `make test`, GOMS_FAULT_PHASE (8s in `make faults`) for the full run.
func faultPhase(t *testing.T) time.Duration {
	if v := os.Getenv("GOMS_FAULT_PHASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("GOMS_FAULT_PHASE: %v", err)
		}
		return d
	}
	return 2 * time.Second
}

// faultLoad counts the calls of one phase.
type faultLoad struct {
	mu      sync.Mutex
	samples map[string][]time.Duration // by class, successful calls
	sent    map[string]int
	failed  map[string]int
	first   map[string]string
}

func newFaultLoad() *faultLoad {
	return &faultLoad{samples: map[string][]time.Duration{}, sent: map[string]int{}, failed: map[string]int{}, first: map[string]string{}}
}

func (l *faultLoad) add(class string, took time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[class]++
	if err != nil {
		l.failed[class]++
		if l.first[class] == "" {
			l.first[class] = err.Error()
		}
		return
	}
	l.samples[class] = append(l.samples[class], took)
}

func (l *faultLoad) p99(class string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.samples[class])
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	return s[len(s)*99/100]
}

// TestRemoteFaults runs the fault matrix of remote calls with real
// processes: two replicas of the test server (grpc engine listeners), an
// edge process exposing them, and a caller in this process reaching them
// through Server.Client. Sixteen callers in a closed loop (half through the
// edge in Connect JSON, half through Server.Client in gRPC; half calling
// List, which is side-effect-free, half Create) with a 1s deadline, through
// each phase: the baseline, a hung replica (SIGSTOP, then SIGCONT), a
// killed then restarted replica, a bad deploy (a process without the
// service on a replica's address), a slow replica (200ms more per call), an
// erroring replica (unavailable, then internal), a draining replica
// (SIGTERM with a drain delay), and every replica failing.
func TestRemoteFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	phase := faultPhase(t)
	addrA, addrB := freePort(t), freePort(t)
	replicaArgs := func(addr string, extra ...string) []string {
		return append([]string{"-grpc-addr", addr, "-drain-delay", "1s", "-shutdown-timeout", "2s"}, extra...)
	}
	replicas := map[string]*serverProcess{
		"a": startServerProcess(t, "replica-a", replicaArgs(addrA)...),
		"b": startServerProcess(t, "replica-b", replicaArgs(addrB)...),
	}
	edge := startServerProcess(t, "edge", "-edge", addrA+","+addrB)
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Remotes:   []goms.Remote{{Name: "goms", Service: gomsv1connect.GoMsServiceName, Targets: []string{addrA, addrB}}},
	}, func(*goms.Server) error { return nil })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	viaClient := gomsv1connect.NewGoMsServiceClient(hc, url, connect.WithGRPC())
	viaEdge := gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}, edge.url("http"), connect.WithProtoJSON())

	setFault := func(p *serverProcess, mode string) {
		t.Helper()
		res, err := http.Post(p.url("admin")+"/fault?mode="+mode, "", nil)
		if err != nil {
			t.Fatalf("fault %s on %s: %v", mode, p.name, err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("fault %s on %s: %s", mode, p.name, res.Status)
		}
	}
	restart := func(name string, extra ...string) {
		t.Helper()
		addr := map[string]string{"a": addrA, "b": addrB}[name]
		// The port was just freed; give the kernel a moment if it is busy.
		for i := 0; ; i++ {
			p, err := tryStartServerProcess(t, "replica-"+name, replicaArgs(addr, extra...)...)
			if err == nil {
				replicas[name] = p
				return
			}
			if i == 20 {
				t.Fatalf("restarting replica %s: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	type result struct {
		name              string
		sent              map[string]int
		failed            map[string]int
		p99               map[string]time.Duration
		attemptsPerCall   float64
		hedges, throttled int64
		firstErrs         map[string]string
	}
	var results []result
	var created atomic.Int64 // names of created items, unique across phases
	classes := []string{"edge/List", "edge/Create", "client/List", "client/Create"}

	// run drives the load for d while during runs, and returns the counts.
	run := func(name string, d time.Duration, during func()) result {
		t.Helper()
		load := newFaultLoad()
		before := caller.Server.Remotes()[0]
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 16 {
			client, via := viaClient, "client"
			if i%2 == 0 {
				client, via = viaEdge, "edge"
			}
			method := "List"
			if i%4 >= 2 {
				method = "Create"
			}
			class := via + "/" + method
			wg.Go(func() {
				for ctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
					t0 := time.Now()
					var err error
					if method == "List" {
						_, err = client.List(cctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 1}))
					} else {
						_, err = client.Create(cctx, connect.NewRequest(&gomsv1.CreateRequest{Name: fmt.Sprintf("f-%d", created.Add(1))}))
					}
					ccancel()
					load.add(class, time.Since(t0), err)
				}
			})
		}
		if during != nil {
			during()
		}
		wg.Wait()
		after := caller.Server.Remotes()[0]
		calls := after.Calls - before.Calls
		r := result{name: name, sent: load.sent, failed: load.failed, p99: map[string]time.Duration{}, firstErrs: load.first,
			hedges: after.Hedges - before.Hedges, throttled: after.Throttled - before.Throttled}
		if calls > 0 {
			r.attemptsPerCall = float64(after.Attempts-before.Attempts) / float64(calls)
		}
		for _, c := range classes {
			r.p99[c] = load.p99(c)
		}
		results = append(results, r)
		return r
	}
	afterDelay := func(d time.Duration, f func()) func() {
		return func() { time.Sleep(d); f() }
	}

	base := run("baseline", phase, nil)
	run("hung replica (SIGSTOP, SIGCONT)", phase, afterDelay(phase/8, func() {
		_ = replicas["b"].cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(phase * 5 / 8)
		_ = replicas["b"].cmd.Process.Signal(syscall.SIGCONT)
	}))
	run("killed, then restarted replica", phase, afterDelay(phase/8, func() {
		_ = replicas["b"].cmd.Process.Kill()
		<-replicas["b"].done
		time.Sleep(phase / 4)
		restart("b")
	}))
	// A bad deploy: b's address runs a process without the service.
	_ = replicas["b"].cmd.Process.Kill()
	<-replicas["b"].done
	restart("b", "-no-service")
	run("bad deploy (no service)", phase, nil)
	_ = replicas["b"].cmd.Process.Kill()
	<-replicas["b"].done
	restart("b")
	waitReady(t, caller.Server, 2)
	setFault(replicas["b"], "slow")
	slow := run("slow replica (+200ms)", phase, nil)
	setFault(replicas["b"], "unavailable")
	run("erroring replica (unavailable)", phase, nil)
	setFault(replicas["b"], "internal")
	run("erroring replica (internal)", phase, nil)
	setFault(replicas["b"], "none")
	waitReady(t, caller.Server, 2)
	run("draining replica (SIGTERM, 1s drain)", phase, afterDelay(phase/8, func() {
		_, _ = replicas["b"].stop(t, 10*time.Second)
		restart("b")
	}))
	waitReady(t, caller.Server, 2)
	setFault(replicas["a"], "unavailable")
	setFault(replicas["b"], "unavailable")
	// Throttling looks at the last 5s: it needs a longer phase to show.
	allFailing := run("every replica failing (unavailable)", max(phase, 6*time.Second), nil)
	setFault(replicas["a"], "none")
	setFault(replicas["b"], "none")

	// The table, then the targets.
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-38s", "phase")
	for _, c := range classes {
		fmt.Fprintf(&b, " %22s", c+" fail/sent p99")
	}
	fmt.Fprintf(&b, " %9s %7s %9s\n", "att/call", "hedges", "throttled")
	for _, r := range results {
		fmt.Fprintf(&b, "%-38s", r.name)
		for _, c := range classes {
			fmt.Fprintf(&b, " %9s %11v", fmt.Sprintf("%d/%d", r.failed[c], r.sent[c]), r.p99[c].Round(100*time.Microsecond))
		}
		fmt.Fprintf(&b, " %9.3f %7d %9d\n", r.attemptsPerCall, r.hedges, r.throttled)
	}
	t.Log(b.String())

	for _, r := range results[:len(results)-1] {
		for _, c := range classes {
			limit := 0.005
			if strings.HasSuffix(c, "/List") {
				limit = 0.001
			}
			if r.sent[c] == 0 {
				t.Errorf("%s: no %s call finished", r.name, c)
				continue
			}
			// A short phase sends too few calls for the rate alone: it
			// may also lose the calls caught in flight when the fault
			// struck, one per caller of the class, and the three in a row
			// that eject an erroring replica (calls that reached a replica
			// and cannot be sent again).
			allowed := limit * float64(r.sent[c])
			if phase < 8*time.Second && !strings.HasSuffix(c, "/List") {
				allowed += 4 + 3
			}
			if rate := float64(r.failed[c]) / float64(r.sent[c]); float64(r.failed[c]) > allowed {
				t.Errorf("%s: %s: %d of %d calls failed (%.2f%%, target %.1f%%); first: %s", r.name, c, r.failed[c], r.sent[c], 100*rate, 100*limit, r.firstErrs[c])
			}
		}
		if r.attemptsPerCall > 1.2 {
			t.Errorf("%s: %.3f attempts per call, target 1.2", r.name, r.attemptsPerCall)
		}
	}
	for _, c := range classes {
		if !strings.HasSuffix(c, "/List") {
			continue
		}
		if limit := 2*base.p99[c] + 200*time.Millisecond; slow.p99[c] > limit {
			t.Errorf("slow replica: %s p99 %v, want at most 2 × baseline %v + hedge delay", c, slow.p99[c], base.p99[c])
		}
	}
	if allFailing.throttled == 0 {
		t.Errorf("every replica failing: no call was throttled")
	}
}

// waitReady waits until the first remote of srv has n ready endpoints: an
// endpoint ejected after failing for a whole phase may stay out for up to
// the longest ejection, 30s.
func waitReady(t *testing.T, srv *goms.Server, n int) {
	t.Helper()
	const wait = 35 * time.Second
	deadline := time.Now().Add(wait)
	for {
		ready := 0
		for _, ep := range srv.Remotes()[0].Endpoints {
			if ep.State == "ready" {
				ready++
			}
		}
		if ready >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote endpoints not ready after %v: %+v", wait, srv.Remotes()[0].Endpoints)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
