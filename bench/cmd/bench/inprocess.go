package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/reversTeam/go-ms/bench/internal/load"
)

// inProcessName names the in-process measurement for -run.
const inProcessName = "in-process vs loopback"

// callSample is what one window of back-to-back calls from one goroutine
// measured.
type callSample struct {
	calls      int64
	elapsed    time.Duration
	cpuPerCall time.Duration // of this whole process: client and server
}

// inProcessResult holds the samples of both calls, one per round.
type inProcessResult struct {
	inProcess, loopback []callSample
}

// measured reports whether both calls have samples.
func (r inProcessResult) measured() bool {
	return len(r.inProcess) > 0 && len(r.inProcess) == len(r.loopback)
}

// measureInProcess runs goms's own micro-benchmark of the in-process
// client, BenchmarkClient of the goms package (built by buildBinaries as
// goms.test), once per round: a goms server of the default stack in the
// test process, and unary Get calls made back to back by one goroutine,
// first through srv.Client (in-process), then through a connect-go gRPC
// client over a loopback h2c connection to the same server. The benchmark
// reports the process's CPU per call (cpu-ns/op, from getrusage): both
// sides, either way. It runs in a process of its own so that this one
// links no goms (goms links grpc-go's gzip, which grpc-go clients then
// offer to servers), bound to clientCPUs when not nil.
func measureInProcess(ctx context.Context, cfg config, bins binaries, clientCPUs []int) (res inProcessResult, err error) {
	for round := range cfg.rounds {
		var before, after cpuTimes
		if clientCPUs != nil {
			if before, err = readCPUTimes(clientCPUs); err != nil {
				return res, err
			}
		}
		cmd := exec.CommandContext(ctx, bins.path("goms.test"),
			"-test.run", "^$", "-test.bench", "^BenchmarkClient$", "-test.benchtime", cfg.duration.String())
		cmd.Env = childEnv(clientCPUs)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return res, fmt.Errorf("BenchmarkClient: %w\n%s", err, out)
		}
		var other float64
		if clientCPUs != nil {
			if after, err = readCPUTimes(clientCPUs); err != nil {
				return res, err
			}
			other = otherLoad(before, after, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
		}
		samples, err := parseClientBenchmark(out)
		if err != nil {
			return res, err
		}
		for _, c := range []struct {
			name    string
			samples *[]callSample
		}{{"in-process", &res.inProcess}, {"loopback-h2c", &res.loopback}} {
			s, ok := samples[c.name]
			if !ok {
				return res, fmt.Errorf("BenchmarkClient reported no %s case:\n%s", c.name, out)
			}
			logf("round %d/%d, %s, %s: %.0f calls/s, %.1f µs CPU/call (client and server); other processes: %.0f%% of the client CPU",
				round+1, cfg.rounds, inProcessName, c.name, float64(s.calls)/s.elapsed.Seconds(), micros(s.cpuPerCall), 100*other)
			*c.samples = append(*c.samples, s)
		}
		if err := load.Sleep(ctx, cfg.pause); err != nil {
			return res, err
		}
	}
	return res, nil
}

// parseClientBenchmark reads the result lines of BenchmarkClient, such as
//
//	BenchmarkClient/in-process-2   112153   10408 ns/op   14057 cpu-ns/op   8239 B/op   100 allocs/op
//
// by sub-benchmark name.
func parseClientBenchmark(out []byte) (map[string]callSample, error) {
	samples := make(map[string]callSample)
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) < 4 {
			continue
		}
		name, ok := strings.CutPrefix(fields[0], "BenchmarkClient/")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the -GOMAXPROCS suffix, when not 1
			}
		}
		var s callSample
		var nsPerOp, cpuPerOp float64
		n, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("BenchmarkClient line %q: %w", line, err)
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("BenchmarkClient line %q: %w", line, err)
			}
			switch fields[i+1] {
			case "ns/op":
				nsPerOp = v
			case "cpu-ns/op":
				cpuPerOp = v
			}
		}
		if n <= 0 || nsPerOp <= 0 || cpuPerOp <= 0 {
			return nil, fmt.Errorf("BenchmarkClient line %q: no iterations, ns/op or cpu-ns/op", line)
		}
		s.calls = n
		s.elapsed = time.Duration(nsPerOp * float64(n))
		s.cpuPerCall = time.Duration(cpuPerOp)
		samples[name] = s
	}
	return samples, nil
}
