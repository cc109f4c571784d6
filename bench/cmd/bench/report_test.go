package main

import (
	"strings"
	"testing"
	"time"
)

// TestReportTargets renders a report of made-up samples, in which every
// goms setup costs a fixed share more server CPU than connect-go, and
// checks the rows built from them.
func TestReportTargets(t *testing.T) {
	t.Parallel()
	cost := map[Kind]time.Duration{
		KindConnect: 40 * time.Microsecond, KindGomsNone: 40 * time.Microsecond, KindGomsDefault: 41 * time.Microsecond,
		KindGomsObserved: 48 * time.Microsecond, KindGoms: 50 * time.Microsecond, KindGomsEngine: 30 * time.Microsecond,
		KindGRPCGo: 10 * time.Microsecond, KindGateway: 80 * time.Microsecond,
	}
	r := report{cfg: config{rounds: 2}, results: make(map[caseRun][]sample)}
	r.runs = plan(nil)
	for _, c := range r.runs {
		s := sample{throughput: 1e6 / micros(cost[c.kind]), cpuPerCall: cost[c.kind], p99: time.Millisecond}
		r.results[c] = []sample{s, s}
	}
	call := func(cpu time.Duration) callSample {
		return callSample{calls: 1000, elapsed: time.Second, cpuPerCall: cpu}
	}
	r.inProcess = inProcessResult{
		inProcess: []callSample{call(15 * time.Microsecond), call(16 * time.Microsecond)},
		loopback:  []callSample{call(150 * time.Microsecond), call(160 * time.Microsecond)},
	}
	md := r.markdown()
	for _, want := range []string{
		"| goms default stack server CPU per call ÷ connect-go, gRPC, h2c | ≤ 1.05× | 1.02× | yes |",
		"| goms with metrics, tracing (sampling off) and access log, server CPU per call ÷ connect-go, Connect JSON, h2c | ≤ 1.15× | 1.20× | **no** |",
		"| goms (default stack, grpc engine) server CPU per call ÷ connect-go, gRPC | ≤ 1.05× | 0.75× | yes |",
		"worst other case (small payload, 1 concurrent, gRPC, h2c) | ≤ 1.05× | 1.02× | yes |",
		"| in-process call CPU vs loopback (loopback ÷ in-process, client and server CPU per gRPC call, goms default stack) | ≥ 5× cheaper | 10.0× cheaper | yes |",
		"| protocol | connect-go | goms, no interceptors | goms, default stack | goms, metrics+tracing+access log | goms, example setup |",
		"| gRPC, h2c | 40.0 | 40.0 (1.00×) | 41.0 (1.02×) | 48.0 (1.20×) | 50.0 (1.25×) |",
		"| gRPC-Web, h2c | 40.0 | — | 41.0 (1.02×) | 48.0 (1.20×) | 50.0 (1.25×) |",
		"| loopback h2c | 1000 | 155.0 |",
		"Loopback ÷ in-process, CPU per call: 10.0×",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(md, "| goms server CPU per call ÷ connect-go, gRPC, h2c |") {
		t.Error("the example setup is still a per-protocol target")
	}
}

// TestParseClientBenchmark reads BenchmarkClient's lines with and without
// the GOMAXPROCS suffix.
func TestParseClientBenchmark(t *testing.T) {
	t.Parallel()
	out := []byte(`goos: linux
BenchmarkClient/in-process         	   94260	     12570 ns/op	     12628 cpu-ns/op	    8698 B/op	     109 allocs/op
BenchmarkClient/loopback-h2c-2     	   11485	    104231 ns/op	    104523 cpu-ns/op	   18528 B/op	     215 allocs/op
PASS
`)
	got, err := parseClientBenchmark(out)
	if err != nil {
		t.Fatal(err)
	}
	in, lo := got["in-process"], got["loopback-h2c"]
	if in.calls != 94260 || in.cpuPerCall != 12628 || lo.calls != 11485 || lo.cpuPerCall != 104523 {
		t.Errorf("parsed %+v", got)
	}
	if _, err := parseClientBenchmark([]byte("BenchmarkClient/in-process 10 0 ns/op\n")); err == nil {
		t.Error("a line without cpu-ns/op was accepted")
	}
}
