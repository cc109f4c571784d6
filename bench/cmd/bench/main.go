// Command bench is the load benchmark of goms: it builds and starts, each
// in its own process bound to one CPU, goms (the examples/gateway setup,
// on both engines; its default stack; the default stack with metrics,
// tracing and the access log; and without interceptors), a bare
// connect-go handler, a grpc-go server and grpc-gateway in front of
// grpc-go; it loads them in turn from this process, bound to another CPU,
// one protocol at a time, and prints markdown tables of throughput,
// latency, server CPU and allocations per request, and memory, with
// ratios against connect-go and grpc-go or grpc-gateway. It also compares,
// within this process, the CPU cost of a call to a co-located goms
// service made in-process with that of the same call over loopback.
//
// Run it from the bench module: `make bench` (full, about 18 minutes,
// writes docs/benchmarks.md) or `make bench-quick` (a few seconds: checks
// that every server answers every protocol it serves, and that the
// in-process measurement runs; timings mean nothing).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reversTeam/go-ms/bench/internal/pin"
)

// config is the command line.
type config struct {
	quick      bool
	warmup     time.Duration
	duration   time.Duration
	pause      time.Duration
	rounds     int
	idleConns  int
	settle     time.Duration
	serverCPUs []int
	clientCPUs []int
	filter     *regexp.Regexp
	out        string
	profileDir string
	maxNoise   float64
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var cfg config
	fs.BoolVar(&cfg.quick, "quick", false, "check that every server answers every protocol it serves, in a few seconds; timings mean nothing")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "warm-up of each case, not measured")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time of each case")
	fs.IntVar(&cfg.rounds, "rounds", 3, "times the whole interleaved list of cases is run; medians are reported")
	fs.IntVar(&cfg.idleConns, "idle-conns", 1000, "idle h2c connections opened to measure memory per connection")
	serverCPUs := fs.String("server-cpus", "0", "CPUs the servers are bound to, comma-separated")
	clientCPUs := fs.String("client-cpus", "1", "CPUs the load client (this process) is bound to, comma-separated")
	filter := fs.String("run", "", "run only the cases whose name (scenario, protocol, server) matches this regexp")
	fs.StringVar(&cfg.out, "out", "", "write the report to this markdown file (full mode only)")
	fs.Float64Var(&cfg.maxNoise, "max-noise", 0.1, "share of the server's or client's CPU other processes may take before a case is run again (at most twice)")
	fs.StringVar(&cfg.profileDir, "cpuprofile", "", "directory where each server writes a CPU profile of its load runs (KIND.pprof)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.serverCPUs, err = parseCPUs(*serverCPUs); err != nil {
		return cfg, fmt.Errorf("-server-cpus: %w", err)
	}
	if cfg.clientCPUs, err = parseCPUs(*clientCPUs); err != nil {
		return cfg, fmt.Errorf("-client-cpus: %w", err)
	}
	if *filter != "" {
		if cfg.filter, err = regexp.Compile(*filter); err != nil {
			return cfg, fmt.Errorf("-run: %w", err)
		}
	}
	cfg.pause, cfg.settle = 250*time.Millisecond, 2*time.Second
	if cfg.quick {
		if cfg.out != "" {
			return cfg, errors.New("-out: quick mode measures nothing worth writing down")
		}
		cfg.warmup, cfg.duration, cfg.pause, cfg.rounds = 50*time.Millisecond, 100*time.Millisecond, 0, 1
		cfg.idleConns, cfg.settle, cfg.maxNoise = 10, 100*time.Millisecond, 1
	}
	if cfg.rounds < 1 || cfg.duration <= 0 || cfg.warmup < 0 || cfg.idleConns < 1 {
		return cfg, errors.New("-rounds, -duration and -idle-conns must be positive, -warmup not negative")
	}
	return cfg, nil
}

func parseCPUs(s string) ([]int, error) {
	var cpus []int
	for f := range strings.SplitSeq(s, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 0 {
			return nil, fmt.Errorf("%q is not a CPU number", f)
		}
		cpus = append(cpus, c)
	}
	return cpus, nil
}

func run(ctx context.Context, cfg config, args []string) error {
	began := time.Now()
	runs := plan(cfg.filter)
	inProcess := cfg.filter == nil || cfg.filter.MatchString(inProcessName)
	if len(runs) == 0 && !inProcess {
		return errors.New("-run: no case matches")
	}
	env := describeMachine()
	benchDir, err := moduleDir(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "goms-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	logf("building the servers")
	bins, err := buildBinaries(ctx, benchDir, filepath.Dir(benchDir), tmp)
	if err != nil {
		return err
	}

	// Bind after building, so that the builds may use every CPU.
	serverCPUs := cfg.serverCPUs
	if pin.Available(cfg.serverCPUs) && pin.Available(cfg.clientCPUs) {
		if err := pin.Process(os.Getpid(), cfg.clientCPUs); err != nil {
			return err
		}
		runtime.GOMAXPROCS(len(cfg.clientCPUs))
		env.pinned = true
	} else {
		logf("CPUs %v and %v are not all available: running unbound", cfg.serverCPUs, cfg.clientCPUs)
		serverCPUs = nil
	}

	logf("measuring idle memory (%d connections per server)", cfg.idleConns)
	var idle []idleResult
	for _, t := range idleTargets(bins, serverCPUs) {
		r, err := measureIdle(ctx, t, cfg.idleConns, cfg.settle)
		if err != nil {
			return fmt.Errorf("idle memory of %s: %w", t.label, err)
		}
		logf("  %s, %s: idle RSS %.1f MiB, %.1f KiB per connection", t.label, t.listener, mib(r.idle), kib(r.perConn))
		idle = append(idle, r)
	}

	logf("running %d cases x %d rounds (%v warm-up + %v each)", len(runs), cfg.rounds, cfg.warmup, cfg.duration)
	results, failures, retried, err := measure(ctx, cfg, bins, serverCPUs, runs)
	if err != nil {
		return err
	}
	var inProcessCalls inProcessResult
	if inProcess {
		logf("measuring %s (goms's BenchmarkClient): %d rounds of %v per case", inProcessName, cfg.rounds, cfg.duration)
		var clientCPUs []int
		if env.pinned {
			clientCPUs = cfg.clientCPUs
		}
		if inProcessCalls, err = measureInProcess(ctx, cfg, bins, clientCPUs); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures = append(failures, fmt.Sprintf("  %s: %v", inProcessName, err))
			logf("%s: FAILED: %v", inProcessName, err)
		}
	}
	rep := report{
		cfg:       cfg,
		env:       env,
		command:   commandLine(args),
		runs:      runs,
		results:   results,
		inProcess: inProcessCalls,
		retried:   retried,
		idle:      idle,
		elapsed:   time.Since(began),
		finished:  time.Now(),
	}
	md := rep.markdown()
	if cfg.quick {
		what := "not run (-run)"
		if inProcessCalls.measured() {
			what = "ran"
		} else if inProcess {
			what = "failed"
		}
		logf("quick check done: %d cases and %d idle-memory measurements ran; %s %s", len(runs), len(idle), inProcessName, what)
	} else {
		fmt.Print(md)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d case(s) failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.out)
	}
	return nil
}

// commandLine is the shell command that reruns this run, saying so when
// it is what `make bench` runs.
func commandLine(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if a == "" || strings.ContainsAny(a, " \t'\"$\\|&;()<>*?[]{}!#~`") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	cmd := "`" + strings.TrimSpace("cd bench && go run ./cmd/bench "+strings.Join(quoted, " ")) + "`"
	if slices.Equal(args, []string{"-out", "../docs/benchmarks.md"}) {
		cmd += ", which `make bench` runs"
	}
	return cmd
}

// moduleDir returns the directory of the bench module.
func moduleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w (run bench from the bench module)", err)
	}
	dir := strings.TrimSpace(string(out))
	if filepath.Base(dir) != "bench" {
		return "", fmt.Errorf("run bench from the bench module, not %s", dir)
	}
	return dir, nil
}

// machine describes where the benchmark ran.
type machine struct {
	goVersion string
	cpu       string
	cpus      int
	kernel    string
	pinned    bool
}

func describeMachine() machine {
	m := machine{goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, cpus: runtime.NumCPU(), cpu: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(data)) {
			if name, ok := strings.CutPrefix(l, "model name"); ok {
				m.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(data))
	}
	return m
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
func kib(b int64) float64 { return float64(b) / (1 << 10) }
