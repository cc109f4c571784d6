package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reversTeam/go-ms/bench/internal/load"
)

// report renders the results as markdown.
type report struct {
	cfg     config
	env     machine
	command string
	runs    []caseRun
	results map[caseRun][]sample
	// inProcess is the in-process vs loopback measurement, if it ran.
	inProcess inProcessResult
	retried   int
	idle      []idleResult
	elapsed   time.Duration
	finished  time.Time
}

const none = "—"

func (r report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Written by `make bench` ([bench/cmd/bench](../bench/cmd/bench)); rerun it rather than editing this file.\n")
	w("Figures move by ±20%% from one run to the next on a shared machine: compare servers within one run,\n")
	w("through the ratios, not with figures from another run or machine. `make bench-quick` runs every case for a tenth\n")
	w("of a second instead, to check that the harness and every server work (CI); its timings mean nothing.\n\n")
	r.writeSetup(w)
	r.writeTargets(w)
	r.writeBreakdown(w)
	r.writeResults(w)
	r.writeInProcess(w)
	r.writeIdle(w)
	w("%s", method)
	return b.String()
}

func (r report) writeSetup(w func(string, ...any)) {
	mode := "full"
	if r.cfg.quick {
		mode = "quick (a smoke test: timings mean nothing)"
	}
	w("## Run\n\n")
	w("- Command: %s\n", r.command)
	w("- Mode: %s; finished %s after %s\n", mode, r.finished.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	w("- Go: %s\n", r.env.goVersion)
	w("- CPU: %s, %d logical CPUs; Linux %s\n", r.env.cpu, r.env.cpus, r.env.kernel)
	if r.env.pinned {
		w("- Binding: servers on CPU %s (GOMAXPROCS=%d), the load client on CPU %s (GOMAXPROCS=%d)\n",
			cpuList(r.cfg.serverCPUs), len(r.cfg.serverCPUs), cpuList(r.cfg.clientCPUs), len(r.cfg.clientCPUs))
	} else {
		w("- Binding: none (the CPUs asked for were not available)\n")
	}
	w("- Each case: %v warm-up, then %v measured; %d rounds of all %d cases run one after the other, medians reported\n",
		r.cfg.warmup, r.cfg.duration, r.cfg.rounds, len(r.runs))
	if r.env.pinned {
		var server, client []float64
		for _, ss := range r.results {
			for _, s := range ss {
				server, client = append(server, s.otherServer), append(client, s.otherClient)
			}
		}
		w("- Noise: CPU time not charged to the server or the client on their CPUs (other processes, interrupts),\n")
		w("  per case kept: server CPU median %.0f%%, max %.0f%%; client CPU median %.0f%%, max %.0f%%\n",
			100*medianOf(server), 100*maxOf(server), 100*medianOf(client), 100*maxOf(client))
		w("- Repeated runs, others having taken more than %.0f%% of a CPU: %d (each at most %d times, a quarter of all\n", 100*r.cfg.maxNoise, r.retried, maxRetries)
		w("  runs in total; the quietest attempt is kept)\n")
	}
	w("\n")
}

func (r report) writeTargets(w func(string, ...any)) {
	w("## Targets\n\n")
	w("Goals from the benchmark issue, with the measured value (medians of the per-round ratios, small payload, 50 concurrent unless said).\n")
	w("\"goms\" alone is the examples/gateway setup; the comparisons with grpc-go and grpc-gateway use goms's default stack,\n")
	w("as those run bare; Method describes each server. What moved these figures, and the profiles of the targets\n")
	w("missed: [performance.md](performance.md).\n\n")
	w("| target | goal | measured | met |\n| --- | --- | --- | --- |\n")
	row := func(name, goal string, v float64, ok bool, unit string, met bool) {
		if !ok {
			w("| %s | %s | not measured | %s |\n", name, goal, none)
			return
		}
		w("| %s | %s | %s | %s |\n", name, goal, fmt.Sprintf(unit, v), yesNo(met))
	}
	cpu := func(s sample) float64 { return float64(s.cpuPerCall) }
	thr := func(s sample) float64 { return s.throughput }
	p99 := func(s sample) float64 { return float64(s.p99) }
	first := scenarios()[0]
	for _, p := range first.protocols {
		v, ok := r.ratio(0, p, KindGomsDefault, KindConnect, cpu)
		row("goms default stack server CPU per call ÷ connect-go, "+p.String(), "≤ 1.05×", v, ok, "%.2f×", v <= 1.05)
	}
	for _, p := range first.protocols {
		v, ok := r.ratio(0, p, KindGomsObserved, KindConnect, cpu)
		row("goms with metrics, tracing (sampling off) and access log, server CPU per call ÷ connect-go, "+p.String(), "≤ 1.15×", v, ok, "%.2f×", v <= 1.15)
	}
	for _, p := range first.protocols {
		v, ok := r.ratio(0, p, KindGoms, KindConnect, cpu)
		row("goms examples/gateway setup (metrics, tracing off, validation, auth, a text access log record per call on stderr) server CPU per call ÷ connect-go, "+p.String(), "as close to ≤ 1.15× as it gets", v, ok, "%.2f×", v <= 1.15)
	}
	v, ok := r.ratio(0, load.GRPC, KindGomsEngine, KindConnect, cpu)
	row("goms (default stack, grpc engine) server CPU per call ÷ connect-go, gRPC", "≤ 1.05×", v, ok, "%.2f×", v <= 1.05)
	worst, where := 0.0, ""
	for i, sc := range scenarios()[1:] {
		for _, p := range sc.protocols {
			if v, ok := r.ratio(i+1, p, KindGomsDefault, KindConnect, cpu); ok && v > worst {
				worst, where = v, sc.String()+", "+p.String()
			}
		}
	}
	row("goms (default stack) server CPU per call ÷ connect-go, worst other case ("+orNone(where)+")", "≤ 1.05×", worst, where != "", "%.2f×", worst <= 1.05)
	v, ok = r.ratio(0, load.ConnectJSONHTTP1, KindGomsDefault, KindGateway, thr)
	row("goms (default stack) Connect JSON over HTTP/1.1 throughput ÷ grpc-gateway", "≥ 2.5×", v, ok, "%.2f×", v >= 2.5)
	v, ok = r.ratio(0, load.ConnectJSONHTTP1, KindGomsDefault, KindGateway, p99)
	row("goms (default stack) Connect JSON over HTTP/1.1 p99 latency ÷ grpc-gateway", "≤ 0.5×", v, ok, "%.2f×", v <= 0.5)
	v, ok = r.ratio(0, load.GRPC, KindGomsDefault, KindGRPCGo, thr)
	row("goms (default stack) gRPC throughput ÷ grpc-go", "≥ 0.6×", v, ok, "%.2f×", v >= 0.6)
	v, ok = r.ratio(0, load.GRPC, KindGomsEngine, KindGRPCGo, thr)
	row("goms (default stack, grpc engine) gRPC throughput ÷ grpc-go", "≥ 0.6×", v, ok, "%.2f×", v >= 0.6)
	v, ok = r.inProcessRatio()
	row("in-process call CPU vs loopback (loopback ÷ in-process, client and server CPU per gRPC call, goms default stack)",
		"≥ 5× cheaper", v, ok, "%.1f× cheaper", v >= 5)
	idle, ok := int64(0), false
	for _, i := range r.idle {
		if strings.Contains(i.target.label, "examples/gateway") {
			idle, ok = max(idle, i.idle), true
		}
	}
	row("idle RSS of examples/gateway", "≤ 25 MiB", mib(idle), ok, "%.1f MiB", mib(idle) <= 25)
	for _, i := range r.idle {
		if strings.Contains(i.target.label, "examples/gateway") {
			row(fmt.Sprintf("RSS per idle h2c connection, examples/gateway %s listener (%d connections)", i.target.listener, i.conns),
				"≤ 40 KiB", kib(i.perConn), true, "%.1f KiB", kib(i.perConn) <= 40)
		}
	}
	w("\n")
}

// writeBreakdown shows, per protocol of the main scenario, the server CPU
// per call of connect-go and of each goms setup, from bare goms to the
// example setup, with its ratio to connect-go.
func (r report) writeBreakdown(w func(string, ...any)) {
	steps := []struct {
		kind  Kind
		label string
	}{
		{KindGomsNone, KindGomsNone.Label()},
		{KindGomsDefault, KindGomsDefault.Label()},
		{KindGomsObserved, KindGomsObserved.Label()},
		{KindGoms, "goms, example setup"},
	}
	us := func(s sample) float64 { return micros(s.cpuPerCall) }
	var rows []string
	for _, p := range scenarios()[0].protocols {
		bare := r.results[caseRun{0, p, KindConnect}]
		if len(bare) == 0 {
			continue
		}
		row, some := fmt.Sprintf("| %s | %.1f |", p, median(bare, us)), false
		for _, st := range steps {
			v, ok := r.ratio(0, p, st.kind, KindConnect, us)
			if !ok {
				row += " " + none + " |"
				continue
			}
			row += fmt.Sprintf(" %.1f (%.2f×) |", median(r.results[caseRun{0, p, st.kind}], us), v)
			some = true
		}
		if some {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return
	}
	w("### Where goms's extra CPU goes\n\n")
	w("Server CPU µs per call, small payload, 50 concurrent, and its ratio to connect-go's (median of the per-round ratios),\n")
	w("from bare goms to the example setup: without interceptors, goms adds its listeners, routing and protocol filter to\n")
	w("connect-go; the default stack adds recovery and the access log interceptor (records at debug, not written); the next\n")
	w("column adds Prometheus metrics, tracing with sampling off and a JSON access log record per call written to a file;\n")
	w("the example setup has metrics, tracing off, auth, protovalidate and a text access log record per call on stderr.\n\n")
	w("| protocol | connect-go |")
	for _, st := range steps {
		w(" %s |", st.label)
	}
	w("\n| --- | ---: |%s\n", strings.Repeat(" ---: |", len(steps)))
	for _, row := range rows {
		w("%s\n", row)
	}
	w("\n")
}

func (r report) writeResults(w func(string, ...any)) {
	w("## Results\n\n")
	w("Medians over the rounds. Server CPU and allocations are the server process's own counters (getrusage, runtime.MemStats)\n")
	w("over the measured window, divided by the calls completed in it; \"CPU use\" is that CPU time over the window, 100%% being\n")
	w("the one core the server has: below it, the client (one core as well) or the latency bounds the throughput.\n")
	w("Peak RSS is the server's VmHWM during the case. Ratios are medians of the per-round ratios; ")
	w("\"ref\" is grpc-go for gRPC and grpc-gateway for JSON over HTTP/1.1; %s where a server does not serve the protocol.\n\n", none)
	thr := func(s sample) float64 { return s.throughput }
	for i, sc := range scenarios() {
		if !r.hasScenario(i) {
			continue
		}
		w("### %s\n\n", capitalize(sc.String()))
		if len(sc.protocols) > 3 {
			r.writeOverview(w, i, "Throughput, calls/s", func(ss []sample) string { return fmt.Sprintf("%.0f", median(ss, thr)) })
			r.writeOverview(w, i, "Server CPU per call, µs", func(ss []sample) string {
				return fmt.Sprintf("%.1f", median(ss, func(s sample) float64 { return micros(s.cpuPerCall) }))
			})
		}
		w("| protocol | server | calls/s | p50 | p99 | server CPU µs/call | CPU use | allocs/call | B alloc/call | peak RSS MiB | calls/s ÷ connect-go | CPU/call ÷ connect-go | calls/s ÷ ref | p99 ÷ ref | CPU/call ÷ ref |\n")
		w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, p := range sc.protocols {
			ref := refKind(p)
			for _, k := range Kinds() {
				ss := r.results[caseRun{i, p, k}]
				if len(ss) == 0 {
					continue
				}
				w("| %s | %s | %.0f | %s | %s | %.1f | %.0f%% | %.1f | %.0f | %.1f | %s | %s | %s | %s | %s |\n",
					p, k.Label(), median(ss, thr),
					fmtDur(median(ss, func(s sample) float64 { return float64(s.p50) })),
					fmtDur(median(ss, func(s sample) float64 { return float64(s.p99) })),
					median(ss, func(s sample) float64 { return micros(s.cpuPerCall) }),
					100*median(ss, func(s sample) float64 { return s.cpuUse }),
					median(ss, func(s sample) float64 { return s.allocsPerCall }),
					median(ss, func(s sample) float64 { return s.bytesPerCall }),
					mib(int64(median(ss, func(s sample) float64 { return float64(s.peakRSS) }))),
					r.ratioText(i, p, k, KindConnect, thr),
					r.ratioText(i, p, k, KindConnect, func(s sample) float64 { return float64(s.cpuPerCall) }),
					r.ratioText(i, p, k, ref, thr),
					r.ratioText(i, p, k, ref, func(s sample) float64 { return float64(s.p99) }),
					r.ratioText(i, p, k, ref, func(s sample) float64 { return float64(s.cpuPerCall) }))
			}
		}
		w("\n")
	}
}

// writeOverview writes one figure per protocol and server, %s for the
// pairs that do not apply.
func (r report) writeOverview(w func(string, ...any), sc int, title string, cell func([]sample) string) {
	w("%s:\n\n| protocol |", title)
	for _, k := range Kinds() {
		w(" %s |", k.Label())
	}
	w("\n| --- |%s\n", strings.Repeat(" ---: |", len(Kinds())))
	for _, p := range scenarios()[sc].protocols {
		if !slices.ContainsFunc(Kinds(), func(k Kind) bool { return len(r.results[caseRun{sc, p, k}]) > 0 }) {
			continue
		}
		w("| %s |", p)
		for _, k := range Kinds() {
			if ss := r.results[caseRun{sc, p, k}]; len(ss) > 0 {
				w(" %s |", cell(ss))
			} else {
				w(" %s |", none)
			}
		}
		w("\n")
	}
	w("\n")
}

// writeInProcess reports the in-process vs loopback measurement.
func (r report) writeInProcess(w func(string, ...any)) {
	if !r.inProcess.measured() {
		return
	}
	w("## In-process vs loopback\n\n")
	w("goms's micro-benchmark `go test -run '^$' -bench '^BenchmarkClient$' ./goms`, run once per round")
	if r.env.pinned {
		w(" (on CPU %s, GOMAXPROCS=%d)", cpuList(r.cfg.clientCPUs), len(r.cfg.clientCPUs))
	}
	w(":\none goroutine calls Get back to back on a goms server of the default stack that runs in the same process, through\n")
	w("`srv.Client` (in-process), then through a connect-go gRPC client over a loopback h2c connection to the server's grpc\n")
	w("listener. CPU per call is the test process's CPU time (getrusage: client and server together) over the benchmark's\n")
	w("iterations (cpu-ns/op), and -test.benchtime is the case duration; medians over the rounds.\n\n")
	w("| call, gRPC protocol | calls/s | CPU µs per call |\n| --- | ---: | ---: |\n")
	for _, c := range []struct {
		name    string
		samples []callSample
	}{{"in-process (srv.Client)", r.inProcess.inProcess}, {"loopback h2c", r.inProcess.loopback}} {
		thr := make([]float64, len(c.samples))
		cpu := make([]float64, len(c.samples))
		for i, s := range c.samples {
			thr[i], cpu[i] = float64(s.calls)/s.elapsed.Seconds(), micros(s.cpuPerCall)
		}
		w("| %s | %.0f | %.1f |\n", c.name, medianOf(thr), medianOf(cpu))
	}
	if v, ok := r.inProcessRatio(); ok {
		w("\nLoopback ÷ in-process, CPU per call: %.1f× (median of the per-round ratios).\n", v)
	}
	w("\n")
}

// inProcessRatio is the median over rounds of the loopback call's CPU per
// call divided by the in-process call's, or false when not measured.
func (r report) inProcessRatio() (float64, bool) {
	if !r.inProcess.measured() {
		return 0, false
	}
	return ratio(r.inProcess.loopback, r.inProcess.inProcess, func(s callSample) float64 { return float64(s.cpuPerCall) })
}

func (r report) writeIdle(w func(string, ...any)) {
	w("## Idle memory\n\n")
	w("Each line is a fresh server process: its RSS once started and settled, then with that many h2c connections open,\n")
	w("each having made one unary call (Connect proto or gRPC) and then left idle. The examples/gateway lines run the\n")
	w("example binary itself, not bench/cmd/benchserver.\n\n")
	w("| server | listener | idle RSS MiB | connections | RSS with them MiB | RSS per connection KiB |\n")
	w("| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, i := range r.idle {
		w("| %s | %s | %.1f | %d | %.1f | %.1f |\n", i.target.label, i.target.listener, mib(i.idle), i.conns, mib(i.loaded), kib(i.perConn))
	}
	w("\n")
}

// ratio is the median per-round ratio of f between two servers in a
// scenario and protocol.
func (r report) ratio(sc int, p load.Protocol, a, b Kind, f func(sample) float64) (float64, bool) {
	return ratio(r.results[caseRun{sc, p, a}], r.results[caseRun{sc, p, b}], f)
}

func (r report) ratioText(sc int, p load.Protocol, a, b Kind, f func(sample) float64) string {
	if b == "" {
		return none
	}
	v, ok := r.ratio(sc, p, a, b, f)
	if !ok {
		return none
	}
	return fmt.Sprintf("%.2f×", v)
}

func (r report) hasScenario(sc int) bool {
	for c := range r.results {
		if c.scenario == sc {
			return true
		}
	}
	return false
}

// refKind is the non-connect reference of protocol p, or "".
func refKind(p load.Protocol) Kind {
	switch p {
	case load.GRPC:
		return KindGRPCGo
	case load.ConnectJSONHTTP1:
		return KindGateway
	default:
		return ""
	}
}

func fmtDur(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", micros(d))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, ",")
}

func maxOf(vs []float64) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// method is the fixed part of the report: what runs and how it is measured.
const method = `## Method

Servers, each its own process, all serving goms.v1.GoMsService/Get of an item created at start, under an id of
16 hexadecimal digits. The small item has a 10-byte name (about 60 bytes on the wire), the 10KiB item a
10,240-byte name, created in-process since the API caps names at 200 characters.

- **goms**: the examples/gateway setup, run by bench/cmd/benchserver with the examples' own wiring (examples/app):
  a grpc-mode listener on the net/http engine and an http-mode listener, the admin listener, GoMsService
  (gomsservice) and ChildService mounted with the server's HandlerOptions (app.Mount), and app.Configure's
  plugins and auth, so these interceptors run: Prometheus metrics, tracing (a pass-through: no OTEL_* endpoint is
  set), the access log (one text record per call at info, as examples/gateway writes it, on stderr, which the harness
  sends to a file), recovery, auth (Get is public) and protovalidate. gRPC goes to the grpc listener, the other
  protocols to the http listener. Small payload, 50 concurrent only.
- **goms, grpc engine**: the default stack (below) with ` + "`Engine: goms.EngineGRPC`" + ` on the grpc listener;
  measured on gRPC only, the only protocol it changes.
- **goms, no interceptors**: the goms setup with ` + "`Interceptors.Default`" + ` empty. Against connect-go it prices
  the rest of goms (listeners, routing, protocol filter). Small payload, 50 concurrent only, on three protocols.
- **goms, default stack**: the listeners and services of goms with no plugin and no auth, so goms.New's default
  interceptors only: recovery and the access log, whose records are at debug and so not written by the logger at
  info. Every scenario and protocol.
- **goms, metrics+tracing+access log**: the default stack plus the Prometheus plugin (` + "`prom.New()`" + `), tracing
  on with sampling off (` + "`tracing.Config{Enabled: true, SampleRatio: &zero}`" + `: every call goes through the
  tracing interceptor, no span is recorded, none is exported) and the access log at info: one JSON record per
  call (slog's JSON handler) appended to a file of os.TempDir(), as a deployed service writes it. The harness
  empties the file before each case and fails a case that leaves it empty. Small payload, 50 concurrent only, on
  every protocol.
- **connect-go**: the generated connect handler of gomsservice alone on a net/http server (HTTP/1.1 and h2c),
  with connect-go's defaults.
- **grpc-go**: a grpc-go server with its defaults (bench/cmd/grpcserver), answering Get from a map as gomsservice
  does (a read-locked lookup, then a new Item with two timestamps), through code that protoc-gen-go-grpc
  generated into bench/gen.
- **grpc-gateway**: grpc-gateway's ServeMux on HTTP/1.1, generated with generate_unbound_methods (so
  POST /goms.v1.GoMsService/Get, the Connect path), in front of the grpc-go server above, which runs in the same
  process and is reached over a loopback gRPC connection. Its CPU and memory are those of both.

Clients, one per protocol for every server of that protocol, in the harness process: grpc-go for gRPC;
connect-go for gRPC-Web and Connect proto; for Connect JSON over h2c a net/http POST of the JSON request, every
answer decoded with protojson. Connect JSON over HTTP/1.1, the protocol compared with grpc-gateway, has a client
of its own in the manner of wrk, so that the client's one core does not bound the fastest servers: each worker
keeps one TCP connection, dialled again when the server closes it, writes a request built once (the bytes
net/http's client sent: POST /goms.v1.GoMsService/Get with Host, User-Agent, Content-Length,
Connect-Protocol-Version: 1 and Content-Type: application/json, both a Connect call and a grpc-gateway call), and
reads the status line, the headers and the body (by Content-Length, chunked, or up to the end of the
connection; Connection: close honoured) through a buffer of its connection. Every answer must have status 200 and
a body; the first of each connection is decoded with protojson and its item checked, and every later one must be
byte for byte the same, as a server's protojson output is from one call to the next. A reused connection that
the server closed before answering is dialled again and the request sent once more. None asks for compression.
HTTP/1.1 clients keep one connection per worker; h2c and gRPC clients share one connection.

Each case runs a fixed number of workers, each with one call in flight, back to back: after the warm-up the
harness reads the server's counters, waits the measured time, reads them again; calls completed between the
two reads make the throughput and the divisor of CPU and allocations, and their latencies, sampled, the
percentiles. Between cases, the next server runs: the list is run whole, round after round, so that drift in
the machine touches every server alike. The in-process vs loopback comparison runs last, in a process of its own
(goms's test binary, on the client CPU; no server process is left), with the same rounds and measured time. The
harness itself links no goms: grpc-go clients offer every compressor linked into their program, and connect-go
handlers compress every response a client accepts compressed. goms's listeners keep their adaptive concurrency
limit on, with its cost per call, but with its floor at 64 calls: a closed loop of 50 workers always has 50 calls
in flight, which the limit would otherwise shed as a queue whenever other processes slow the machine down (the
overload tests, ` + "`make overload`" + `, measure the limit itself).

To look into a result, run a subset with profiles, e.g.
` + "`cd bench && go run ./cmd/bench -run 'small payload, 50 concurrent/gRPC' -rounds 1 -cpuprofile /tmp/prof`" + `
then ` + "`go tool pprof -top /tmp/prof/goms.pprof`" + `. bench/gen is regenerated by ` + "`go generate`" + ` in bench/.

Not measured here: TLS, compression, streaming calls, and servers on more than one core.
`
