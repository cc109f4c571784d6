//go:build !race

// The load generator measures the server, not the race detector: these
// tests build without it (make test runs them in a separate, short run).

package goms_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	healthv1 "google.golang.org/grpc/health/grpc_health_v1"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// The overload tests drive goms/internal/testcmd/loadserver, a server
// process whose Get burns CPU and sleeps, with an open-loop load generator.
// Each phase lasts GOMS_OVERLOAD (e.g. "10s", `make overload`), or 3s by
// default, 2s with -short.
func overloadPhase() time.Duration {
	if v := os.Getenv("GOMS_OVERLOAD"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	if testing.Short() {
		return 2 * time.Second
	}
	return 3 * time.Second
}

var loadServerBuild struct {
	once sync.Once
	path string
	err  error
}

// loadServerBinary builds the load server once per test process, without
// the race detector, into the directory of serverBinary's build.
func loadServerBinary(t *testing.T) string {
	t.Helper()
	loadServerBuild.once.Do(func() {
		dir := filepath.Dir(serverBinary(t))
		path := filepath.Join(dir, "loadserver")
		out, err := exec.Command("go", "build", "-o", path, "github.com/reversTeam/go-ms/goms/internal/testcmd/loadserver").CombinedOutput()
		if err != nil {
			loadServerBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		loadServerBuild.path = path
	})
	if loadServerBuild.err != nil {
		t.Fatal(loadServerBuild.err)
	}
	return loadServerBuild.path
}

// startLoadServer starts the load server on one CPU (GOMAXPROCS=1), so
// that the load generator has the other and capacity is that of one core.
func startLoadServer(t *testing.T, name string, args ...string) *serverProcess {
	t.Helper()
	cmd := exec.Command(loadServerBinary(t), args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	return startProcess(t, cmd, name)
}

// loadClient calls Get on the load server over several h2c connections,
// with gRPC, and checks health on a connection of its own.
type loadClient struct {
	clients []gomsv1connect.GoMsServiceClient
	health  *connect.Client[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse]
	next    atomic.Uint64
}

func newLoadClient(t *testing.T, p *serverProcess) *loadClient {
	lc := &loadClient{}
	for range 4 {
		// One connection per client, as gRPC clients keep: calls beyond
		// its stream limit wait for a stream instead of dialing more.
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &protocols, HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true}}
		t.Cleanup(tr.CloseIdleConnections)
		lc.clients = append(lc.clients, gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: tr}, p.url("rpc"), connect.WithGRPC()))
	}
	lc.health = connect.NewClient[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse](
		gomstest.H2C(t), p.url("rpc")+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	return lc
}

func (lc *loadClient) get(ctx context.Context) error {
	c := lc.clients[lc.next.Add(1)%uint64(len(lc.clients))]
	_, err := c.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
	return err
}

// phaseResult is what one phase of load measured.
type phaseResult struct {
	name                   string
	offered                float64 // calls/s sent
	ok, shed, failed, lost int
	duration               time.Duration
	latencies              []time.Duration // of successful calls
	limit                  int             // the adaptive limit at the end, 0 when off
}

func (r phaseResult) goodput() float64 {
	if r.ok == 0 {
		return 0
	}
	return float64(r.ok) / r.duration.Seconds()
}

func (r phaseResult) p99() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// openLoop sends calls at rate for d, whatever the answers, each with a 2s
// deadline; at most 5000 are outstanding (beyond that a call is counted
// lost, not sent).
func (lc *loadClient) openLoop(name string, rate float64, d time.Duration) phaseResult {
	r := phaseResult{name: name, offered: rate, duration: d}
	if rate <= 0 {
		return r
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 5000)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(at))
		select {
		case sem <- struct{}{}:
		default:
			mu.Lock()
			r.lost++
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			t0 := time.Now()
			err := lc.get(ctx)
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				r.ok++
				r.latencies = append(r.latencies, lat)
			case connect.CodeOf(err) == connect.CodeUnavailable:
				r.shed++
			default:
				r.failed++
			}
		})
	}
	wg.Wait()
	return r
}

// closedLoop keeps n calls outstanding for d, pausing 5ms after a shed
// call.
func (lc *loadClient) closedLoop(name string, n int, d time.Duration) phaseResult {
	r := phaseResult{name: name, duration: d}
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range n {
		wg.Go(func() {
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				t0 := time.Now()
				err := lc.get(ctx)
				lat := time.Since(t0)
				cancel()
				mu.Lock()
				if err == nil {
					r.ok++
					r.latencies = append(r.latencies, lat)
				} else if connect.CodeOf(err) == connect.CodeUnavailable {
					r.shed++
					time.Sleep(5 * time.Millisecond) // no busy loop of refusals
				} else {
					r.failed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.offered = float64(r.ok+r.shed+r.failed) / d.Seconds()
	return r
}

// watch checks health every 50ms and samples the server's RSS every
// 250ms until stop is closed, then returns the latencies of the health
// checks, those that failed and the largest RSS.
func (lc *loadClient) watch(t *testing.T, p *serverProcess, stop <-chan struct{}) (health phaseResult, rss int64) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return health, rss
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t0 := time.Now()
		res, err := lc.health.CallUnary(ctx, connect.NewRequest(&healthv1.HealthCheckRequest{}))
		health.latencies = append(health.latencies, time.Since(t0))
		cancel()
		if err != nil || res.Msg.GetStatus() != healthv1.HealthCheckResponse_SERVING {
			health.failed++
		}
		if i%5 == 0 {
			rss = max(rss, p.rss(t))
		}
	}
}

// overloadRound is the figures of one round of phases.
type overloadRound struct {
	unloaded, capacity phaseResult
	phases             []phaseResult // 1x, 3x, 10x
	health             phaseResult   // the health checks throughout
}

// overloadRun is the figures of one server process over several rounds.
type overloadRun struct {
	rounds  []overloadRound
	rss     int64
	metrics string // the server's admission metrics
}

// overloadRounds is how many rounds of phases a run has: the assertions
// take the median over rounds, so that a noisy neighbour on the machine
// during one phase does not decide the outcome.
const overloadRounds = 3

// overloadServer is a load server process that runs rounds of phases.
type overloadServer struct {
	name     string
	adaptive bool
	p        *serverProcess
	lc       *loadClient
	run      overloadRun
}

func startOverload(t *testing.T, adaptive bool) *overloadServer {
	s := &overloadServer{name: "limiter-on", adaptive: adaptive}
	if !adaptive {
		s.name = "limiter-off"
	}
	args := []string{"-cpu", "8ms", "-sleep", "20ms", "-adaptive=" + strconv.FormatBool(adaptive)}
	if adaptive {
		// GOMS_OVERLOAD_LIMIT=N holds the limit at N, to measure what one
		// limit does.
		if n := os.Getenv("GOMS_OVERLOAD_LIMIT"); n != "" {
			args = append(args, "-limit", n)
		}
	}
	s.p = startLoadServer(t, s.name, args...)
	s.lc = newLoadClient(t, s.p)
	return s
}

// round runs one round of phases: one caller, 8 callers in a closed loop
// (the capacity), then 1x, 3x and 10x that capacity.
func (s *overloadServer) round(t *testing.T) {
	d := overloadPhase()
	var round overloadRound
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var rss int64
		round.health, rss = s.lc.watch(t, s.p, stop)
		s.run.rss = max(s.run.rss, rss)
	}()
	time.Sleep(2 * time.Second) // the calls of the last round (of either server) end, within their 2s deadline
	limit := func(r phaseResult) phaseResult {
		if s.adaptive {
			r.limit, _ = admissionState(t, s.p)
		}
		return r
	}
	round.unloaded = limit(s.lc.closedLoop("unloaded", 1, d))
	round.capacity = limit(s.lc.closedLoop("capacity", 8, d))
	capacity := round.capacity.goodput()
	for _, x := range []float64{1, 3, 10} {
		round.phases = append(round.phases, limit(s.lc.openLoop(fmt.Sprintf("%gx", x), x*capacity, d)))
	}
	close(stop)
	<-watched
	s.run.rounds = append(s.run.rounds, round)
}

// stop stops the process and returns the figures of its rounds.
func (s *overloadServer) stop(t *testing.T) overloadRun {
	if s.adaptive {
		for line := range strings.Lines(s.p.admin(t, "/metrics")) {
			if strings.HasPrefix(line, "goms_server_admission_decisions_total{") || strings.HasPrefix(line, "goms_server_adaptive_limit{") {
				s.run.metrics += "  " + line
			}
		}
	}
	if _, err := s.p.stop(t, 30*time.Second); err != nil {
		t.Errorf("%s: %v", s.name, err)
	}
	return s.run
}

func (run overloadRun) table(t *testing.T, name string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d rounds, phases of %v; max RSS %.1f MiB\n", name, len(run.rounds), run.rounds[0].capacity.duration, float64(run.rss)/(1<<20))
	fmt.Fprintf(&b, "  %-5s %-9s %9s %9s %7s %7s %7s %7s %9s %6s\n", "round", "phase", "offered/s", "goodput/s", "ok", "shed", "failed", "lost", "p99", "limit")
	for i, round := range run.rounds {
		for _, r := range append([]phaseResult{round.unloaded, round.capacity}, round.phases...) {
			fmt.Fprintf(&b, "  %-5d %-9s %9.0f %9.1f %7d %7d %7d %7d %9v %6d\n", i+1, r.name, r.offered, r.goodput(), r.ok, r.shed, r.failed, r.lost, r.p99().Round(100*time.Microsecond), r.limit)
		}
		h := round.health
		fmt.Fprintf(&b, "  %-5d health: %d checks, p99 %v, slowest %v, %d failed\n", i+1, len(h.latencies), h.p99().Round(time.Millisecond), slices.Max(append(h.latencies, 0)).Round(time.Millisecond), h.failed)
	}
	b.WriteString(run.metrics)
	t.Log(b.String())
}

// median returns the median of f over the rounds.
func (run overloadRun) median(f func(overloadRound) float64) float64 {
	v := make([]float64, len(run.rounds))
	for i, r := range run.rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// TestOverload drives the load server at 1x, 3x and 10x the capacity it
// measured first, in rounds, with the adaptive limit on and off, in turn. With
// it, in the median round, goodput under overload stays at 90% of the
// best goodput at 1x, with the limiter or without (the server's best: a
// limit held too low would shed calls the server could have served),
// admitted calls keep a p99 within 3x the unloaded one, health checks
// answer within 100ms (p99), and memory stays bounded (in the full run).
// The run without the limiter is otherwise there to compare; its figures
// are logged, not asserted.
func TestOverload(t *testing.T) {
	// The rounds of the two servers alternate, so that both see the same
	// machine: other work on it comes and goes over minutes.
	servers := []*overloadServer{startOverload(t, true), startOverload(t, false)}
	for range overloadRounds {
		for _, s := range servers {
			s.round(t)
		}
	}
	on, off := servers[0].stop(t), servers[1].stop(t)
	on.table(t, "adaptive limit on")
	off.table(t, "adaptive limit off")

	// The targets hold for the full run (phases of 10s or more,
	// make overload). The short run of make test has too few calls per
	// phase for a p99 or a ratio to be that precise, and checks looser
	// bounds that still fail without the limiter.
	minGoodput, maxP99, maxHealth := 0.9, 3.0, 100*time.Millisecond
	if overloadPhase() < 10*time.Second {
		minGoodput, maxP99, maxHealth = 0.75, 3, 250*time.Millisecond
	}
	at1x := func(r overloadRound) float64 { return r.phases[0].goodput() }
	best := max(on.median(at1x), off.median(at1x))
	t.Logf("goodput at 1x: median %.1f/s with the limiter, %.1f/s without", on.median(at1x), off.median(at1x))
	for i, name := range []string{"3x", "10x"} {
		ratio := on.median(func(r overloadRound) float64 { return r.phases[i+1].goodput() }) / best
		t.Logf("%s: goodput / best goodput at 1x: median %.2f", name, ratio)
		if ratio < minGoodput {
			t.Errorf("%s: goodput is %.2f of the best at 1x, %.1f/s (medians of %d rounds); want %.2f or more", name, ratio, best, len(on.rounds), minGoodput)
		}
	}
	// The short run's p99 against the unloaded one mostly measures how busy
	// the machine is (a loaded 2-core CI machine put 1x itself at 4.9x): it
	// compares overload with 1x instead, which the run without the limiter
	// still fails (10x).
	short := overloadPhase() < 10*time.Second
	for i, name := range []string{"1x", "3x", "10x"} {
		ratio := on.median(func(r overloadRound) float64 { return float64(r.phases[i].p99()) / float64(r.unloaded.p99()) })
		t.Logf("%s: p99 of admitted calls / unloaded p99: median %.2f", name, ratio)
		if short {
			if i == 0 {
				continue
			}
			ratio = on.median(func(r overloadRound) float64 { return float64(r.phases[i].p99()) / float64(r.phases[0].p99()) })
			t.Logf("%s: p99 of admitted calls / p99 at 1x: median %.2f", name, ratio)
		}
		if ratio > maxP99 {
			t.Errorf("%s: p99 of admitted calls is %.2fx the reference p99 (median of %d rounds); want %.0f or less", name, ratio, len(on.rounds), maxP99)
		}
	}
	health := time.Duration(on.median(func(r overloadRound) float64 { return float64(r.health.p99()) }))
	failed := on.median(func(r overloadRound) float64 { return float64(r.health.failed) })
	t.Logf("health checks: p99 %v (median of rounds)", health.Round(time.Millisecond))
	if health > maxHealth || failed > 0 {
		t.Errorf("health checks: p99 %v, %v failed (medians of rounds); want them answered within %v", health, failed, maxHealth)
	}
	if on.rss > 256<<20 {
		t.Errorf("the server's RSS reached %.1f MiB; want at most 256", float64(on.rss)/(1<<20))
	}
	if shed := on.median(func(r overloadRound) float64 { return float64(r.phases[2].shed) }); shed == 0 {
		t.Errorf("10x: no call was shed")
	}
}

// admissionState reads the rpc listener's limit and the calls shed so far
// from the server's metrics.
func admissionState(t *testing.T, p *serverProcess) (limit, shed int) {
	for line := range strings.Lines(p.admin(t, "/metrics")) {
		name, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case name == `goms_server_adaptive_limit{listener="rpc"}` && err == nil:
			limit = int(f)
		case strings.HasPrefix(name, "goms_server_admission_decisions_total{") && strings.Contains(name, `decision="shed"`) && err == nil:
			shed += int(f)
		}
	}
	return limit, shed
}

// TestLatencyJump makes the load server's handler 10x slower for a while,
// as a slow database would, under a steady rate of calls, so that the
// calls in flight grow tenfold: the adaptive limit must fall during the
// slow spell, down to what ran fine before, shedding the excess, and the
// shedding must stop within seconds once the handler is fast again.
func TestLatencyJump(t *testing.T) {
	d := overloadPhase()
	slowFor := 10 * time.Second
	if d < 10*time.Second {
		slowFor = 3 * d
	}
	p := startLoadServer(t, "jump", "-cpu", "1ms", "-sleep", "20ms")
	lc := newLoadClient(t, p)
	const rate = 150.0
	type sample struct {
		at          time.Duration
		limit, shed int
	}
	var samples []sample
	start := time.Now()
	done := make(chan phaseResult)
	total := d + slowFor + 5*time.Second
	go func() { done <- lc.openLoop("jump", rate, total) }()
	time.Sleep(d)
	limitBefore, _ := admissionState(t, p)
	res, err := http.Post(fmt.Sprintf("%s/control/slow?factor=10&for=%v", p.url("rpc"), slowFor), "", nil)
	if err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("slowing the server down: %v %v", res, err)
	}
	res.Body.Close()
	slowAt := time.Since(start)
	for time.Since(start) < total {
		limit, shed := admissionState(t, p)
		samples = append(samples, sample{time.Since(start), limit, shed})
		time.Sleep(250 * time.Millisecond)
	}
	r := <-done
	var b strings.Builder
	fmt.Fprintf(&b, "%g calls/s; handler 10x slower from %v for %v; %d ok, %d shed, %d failed; limit before %d\n  t(s)   limit   shed so far\n",
		rate, slowAt.Round(time.Millisecond), slowFor, r.ok, r.shed, r.failed, limitBefore)
	for _, s := range samples {
		fmt.Fprintf(&b, "  %5.2f %6d %8d\n", s.at.Seconds(), s.limit, s.shed)
	}
	t.Log(b.String())

	slowEnd := slowAt + slowFor
	lowest, lowestAt := 1<<30, time.Duration(0)
	for _, s := range samples {
		if s.at >= slowAt && s.at < slowEnd && s.limit < lowest {
			lowest, lowestAt = s.limit, s.at
		}
	}
	// The slow handler takes 10 x (20ms + 1ms): at this rate, that many
	// calls would be in flight without a limit.
	demand := int(rate) * 10 * 21 / 1000
	if lowest > demand/2 {
		t.Fatalf("the limit went from %d to at lowest %d while the handler was slow; want it at most half the %d calls the slow handler would hold", limitBefore, lowest, demand)
	}
	t.Logf("the limit went from %d to %d (%v after the slowdown began), against %d calls in flight without it", limitBefore, lowest, (lowestAt - slowAt).Round(time.Millisecond), demand)
	// Shedding must stop within 3s of the end of the slow spell.
	var lastShed sample
	for _, s := range samples {
		if s.at > slowEnd && (lastShed.at == 0 || s.shed > lastShed.shed) {
			lastShed = s
		}
	}
	t.Logf("the last shed call was seen %v after the slowdown ended; the limit was then %d and is %d at the end",
		(lastShed.at - slowEnd).Round(time.Millisecond), lastShed.limit, samples[len(samples)-1].limit)
	if lastShed.at-slowEnd > 3*time.Second {
		t.Errorf("calls were still shed %v after the slowdown ended", lastShed.at-slowEnd)
	}
	if end := samples[len(samples)-1].limit; end < lowest {
		t.Errorf("the limit ended at %d, below its lowest while slow (%d)", end, lowest)
	}
}
