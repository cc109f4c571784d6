package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/bench/internal/load"
)

// scenario is a payload at a concurrency, and the protocols measured so.
type scenario struct {
	payload     string
	concurrency int
	protocols   []load.Protocol
}

func (s scenario) String() string {
	return fmt.Sprintf("%s payload, %d concurrent", s.payload, s.concurrency)
}

// scenarios is the case matrix: every protocol with small messages at 50
// calls in flight, and the three most used protocols at 1 in flight and
// with 10 KiB messages, which keeps the full run near 18 minutes.
func scenarios() []scenario {
	core := []load.Protocol{load.GRPC, load.ConnectProtoH2C, load.ConnectJSONHTTP1}
	return []scenario{
		{admin.PayloadSmall, 50, load.Protocols()},
		{admin.PayloadSmall, 1, core},
		{admin.PayloadLarge, 50, core},
	}
}

// caseRun is one server under one protocol in one scenario.
type caseRun struct {
	scenario int
	protocol load.Protocol
	kind     Kind
}

func (c caseRun) name() string {
	return fmt.Sprintf("%s/%s/%s", scenarios()[c.scenario], c.protocol, c.kind)
}

// plan lists the runs of one round, servers of one protocol next to each
// other; filter, when set, keeps the runs whose name matches.
func plan(filter *regexp.Regexp) []caseRun {
	var runs []caseRun
	for i, s := range scenarios() {
		for _, p := range s.protocols {
			for _, k := range Kinds() {
				c := caseRun{scenario: i, protocol: p, kind: k}
				// The breakdown of goms's cost is for the main scenario.
				if k.mainScenarioOnly() && i > 0 {
					continue
				}
				if k.Serves(p) && (filter == nil || filter.MatchString(c.name())) {
					runs = append(runs, c)
				}
			}
		}
	}
	return runs
}

// sample is what one run of a case measured.
type sample struct {
	throughput    float64 // calls per second
	p50, p99      time.Duration
	cpuPerCall    time.Duration // server CPU time per call
	cpuUse        float64       // server CPU time per wall time
	allocsPerCall float64       // server heap allocations per call
	bytesPerCall  float64       // server heap bytes allocated per call
	peakRSS       int64         // server VmHWM during the run
	// otherServer and otherClient are the shares of the server's and the
	// client's CPUs that other processes used meanwhile: noise.
	otherServer, otherClient float64
}

// noise is the larger share of the server's and the client's CPUs that
// other processes used.
func (s sample) noise() float64 { return max(s.otherServer, s.otherClient) }

// snapshot is the state read at both ends of a measured window.
type snapshot struct {
	server     admin.Stats
	client     time.Duration // CPU time of this process
	serverCPUs cpuTimes
	clientCPUs cpuTimes
}

// maxRetries bounds the repetitions of a run that other processes
// disturbed; all of them together are at most a quarter of the runs, so
// that a busy machine lengthens the benchmark by a quarter at most.
const maxRetries = 2

// measure starts every server the runs need, then runs the list of runs
// cfg.rounds times over. A run during which other processes took more than
// cfg.maxNoise of the server's or the client's CPU is repeated, up to
// maxRetries times, and the quietest attempt kept. It returns the samples
// of each run, one per round, the runs that failed, and the number of
// repetitions.
func measure(ctx context.Context, cfg config, bins binaries, cpus []int, runs []caseRun) (results map[caseRun][]sample, failures []string, retried int, err error) {
	servers := make(map[Kind]*server)
	defer func() {
		for _, s := range servers {
			_ = s.stop()
		}
	}()
	for _, c := range runs {
		if servers[c.kind] != nil {
			continue
		}
		s, err := startServer(ctx, bins, c.kind, cpus, cfg.profileDir)
		if err != nil {
			return nil, nil, 0, err
		}
		servers[c.kind] = s
	}
	results = make(map[caseRun][]sample)
	retryBudget := len(runs) * cfg.rounds / 4
	names := admin.ItemNames()
	for round := range cfg.rounds {
		for i, c := range runs {
			s := servers[c.kind]
			sc := scenarios()[c.scenario]
			var smp sample
			var runErr error
			for attempt := 0; ; attempt++ {
				var try sample
				if try, runErr = runCase(ctx, cfg, s, c.protocol, sc, len(names[sc.payload]), cpus != nil); runErr != nil {
					break
				}
				logf("round %d/%d, %d/%d %s: %.0f calls/s, p99 %s, %.1f µs CPU/call; other processes: %.0f%% of the server CPU, %.0f%% of the client CPU",
					round+1, cfg.rounds, i+1, len(runs), c.name(), try.throughput, fmtDur(float64(try.p99)), micros(try.cpuPerCall),
					100*try.otherServer, 100*try.otherClient)
				if attempt == 0 || try.noise() < smp.noise() {
					smp = try
				}
				if try.noise() <= cfg.maxNoise || attempt == maxRetries || retried >= retryBudget {
					break
				}
				retried++
				logf("  other processes took more than %.0f%% of a CPU: running it again", 100*cfg.maxNoise)
				if err := load.Sleep(ctx, cfg.pause); err != nil {
					return nil, nil, 0, err
				}
			}
			if runErr != nil {
				if ctx.Err() != nil {
					return nil, nil, 0, ctx.Err()
				}
				failures = append(failures, fmt.Sprintf("  %s: %v", c.name(), runErr))
				logf("round %d/%d, %d/%d %s: FAILED: %v", round+1, cfg.rounds, i+1, len(runs), c.name(), runErr)
				if err := s.alive(); err != nil {
					return nil, nil, 0, err
				}
				continue
			}
			results[c] = append(results[c], smp)
			if err := load.Sleep(ctx, cfg.pause); err != nil {
				return nil, nil, 0, err
			}
		}
	}
	for k, s := range servers {
		if err := s.stop(); err != nil {
			failures = append(failures, fmt.Sprintf("  %s: %v", k.Label(), err))
		}
		delete(servers, k)
	}
	return results, failures, retried, nil
}

// runCase loads s with protocol p as sc says and returns what it measured.
func runCase(ctx context.Context, cfg config, s *server, p load.Protocol, sc scenario, nameLen int, pinned bool) (sample, error) {
	addr, ok := s.hello.Addrs[endpoint(p)]
	if !ok {
		return sample{}, fmt.Errorf("%s has no %s endpoint", s.kind.Label(), endpoint(p))
	}
	caller, err := load.NewCaller(p, addr, s.hello.IDs[sc.payload], nameLen, sc.concurrency)
	if err != nil {
		return sample{}, err
	}
	defer caller.Close()
	if err := s.truncateLogs(); err != nil {
		return sample{}, err
	}
	if err := resetPeakRSS(s.pid()); err != nil {
		return sample{}, err
	}
	res, err := load.Run(ctx, caller, load.Options{
		Concurrency: sc.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		MaxSamples:  1 << 19,
		MaxCalls:    1 << 26,
	}, func(ctx context.Context) (snapshot, error) {
		var snap snapshot
		var err error
		if snap.server, err = s.admin.Stats(ctx); err != nil {
			return snap, err
		}
		if snap.client, err = admin.ProcessCPU(); err != nil {
			return snap, err
		}
		if pinned {
			if snap.serverCPUs, err = readCPUTimes(cfg.serverCPUs); err != nil {
				return snap, err
			}
			if snap.clientCPUs, err = readCPUTimes(cfg.clientCPUs); err != nil {
				return snap, err
			}
		}
		return snap, nil
	})
	if err != nil {
		return sample{}, err
	}
	if res.Errors > 0 {
		return sample{}, fmt.Errorf("%d failed calls, the first: %w", res.Errors, res.FirstError)
	}
	if res.FirstError != nil {
		return sample{}, res.FirstError
	}
	if err := s.checkAccessLog(); err != nil {
		return sample{}, err
	}
	peak, err := procStatus(s.pid(), "VmHWM")
	if err != nil {
		return sample{}, err
	}
	calls := float64(res.Calls)
	before, after := res.Before, res.After
	cpu := after.server.CPU - before.server.CPU
	return sample{
		throughput:    res.Throughput(),
		p50:           res.Percentile(50),
		p99:           res.Percentile(99),
		cpuPerCall:    time.Duration(float64(cpu) / calls),
		cpuUse:        float64(cpu) / float64(res.Elapsed),
		allocsPerCall: float64(after.server.Mallocs-before.server.Mallocs) / calls,
		bytesPerCall:  float64(after.server.AllocBytes-before.server.AllocBytes) / calls,
		peakRSS:       peak,
		otherServer:   otherLoad(before.serverCPUs, after.serverCPUs, cpu),
		otherClient:   otherLoad(before.clientCPUs, after.clientCPUs, after.client-before.client),
	}, nil
}

// median returns the median of the values of samples that f picks.
func median(samples []sample, f func(sample) float64) float64 {
	vs := make([]float64, len(samples))
	for i, s := range samples {
		vs[i] = f(s)
	}
	return medianOf(vs)
}

func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

// ratio returns the median over rounds of f(a)/f(b), each round's samples
// taken minutes apart at most, or false when a round lacks one of them.
// ratio is the median over rounds of f(a) ÷ f(b), or false when the
// rounds are missing or f(b) is zero.
func ratio[T any](a, b []T, f func(T) float64) (float64, bool) {
	if len(a) == 0 || len(a) != len(b) {
		return 0, false
	}
	rs := make([]float64, len(a))
	for i := range a {
		if f(b[i]) == 0 {
			return 0, false
		}
		rs[i] = f(a[i]) / f(b[i])
	}
	return medianOf(rs), true
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
