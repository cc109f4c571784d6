package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/bench/internal/load"
	"github.com/reversTeam/go-ms/bench/internal/pin"
)

// Kind is a server setup under test.
type Kind string

// The server setups, in report order; the values are those of
// benchserver's and grpcserver's -kind.
const (
	// KindGoms is the examples/gateway setup: every plugin the examples
	// run, and auth.
	KindGoms Kind = "goms"
	// KindGomsEngine is KindGoms with the grpc engine on its grpc
	// listener.
	KindGomsEngine Kind = "goms-grpcengine"
	// KindGomsNone is KindGoms with no interceptor selected.
	KindGomsNone Kind = "goms-nointerceptors"
	// KindGomsDefault is goms's default stack: the listeners and services
	// of KindGoms, goms.New's default interceptors only.
	KindGomsDefault Kind = "goms-default"
	// KindGomsObserved is KindGomsDefault plus metrics, tracing with
	// sampling off, and the access log written to a file.
	KindGomsObserved Kind = "goms-observed"
	// KindConnect is the bare connect-go handler.
	KindConnect Kind = "connect"
	// KindGRPCGo is a grpc-go server.
	KindGRPCGo Kind = "grpcgo"
	// KindGateway is grpc-gateway in front of grpc-go.
	KindGateway Kind = "gateway"
)

// Kinds lists every setup in report order.
func Kinds() []Kind {
	return []Kind{KindGoms, KindGomsEngine, KindGomsNone, KindGomsDefault, KindGomsObserved, KindConnect, KindGRPCGo, KindGateway}
}

// Label is the name of the setup in reports.
func (k Kind) Label() string {
	switch k {
	case KindGoms:
		return "goms"
	case KindGomsEngine:
		return "goms, grpc engine"
	case KindGomsNone:
		return "goms, no interceptors"
	case KindGomsDefault:
		return "goms, default stack"
	case KindGomsObserved:
		return "goms, metrics+tracing+access log"
	case KindConnect:
		return "connect-go"
	case KindGRPCGo:
		return "grpc-go"
	case KindGateway:
		return "grpc-gateway"
	default:
		return string(k)
	}
}

// mainScenarioOnly reports whether the setup, a breakdown of goms's cost
// (the example setup among them), is measured in the first scenario only.
func (k Kind) mainScenarioOnly() bool {
	return k == KindGomsNone || k == KindGoms || k == KindGomsObserved
}

// binary names the command of bench/cmd that serves the setup.
func (k Kind) binary() string {
	if k == KindGRPCGo || k == KindGateway {
		return "grpcserver"
	}
	return "benchserver"
}

// Serves reports whether the setup is measured with protocol p: grpc-go
// speaks gRPC only, grpc-gateway JSON over HTTP/1.1 only, the grpc engine
// differs from plain goms on gRPC only, and goms without interceptors, a
// breakdown of goms's cost, is measured on the three main protocols. The
// default and observed stacks are measured on every protocol, in the
// first scenario only (mainScenarioOnly), as goms without interceptors.
func (k Kind) Serves(p load.Protocol) bool {
	switch k {
	case KindGoms, KindGomsDefault, KindGomsObserved, KindConnect:
		return true
	case KindGomsNone:
		return p == load.GRPC || p == load.ConnectProtoH2C || p == load.ConnectJSONHTTP1
	case KindGomsEngine, KindGRPCGo:
		return p == load.GRPC
	case KindGateway:
		return p == load.ConnectJSONHTTP1
	default:
		return false
	}
}

// endpoint is where clients of protocol p go.
func endpoint(p load.Protocol) string {
	if p == load.GRPC {
		return admin.EndpointGRPC
	}
	return admin.EndpointHTTP
}

// binaries builds the server programs into dir: benchserver and
// grpcserver from the bench module, gateway from the repository's
// examples/gateway.
type binaries struct {
	dir    string
	logDir string // where the servers' stderr files go
}

func buildBinaries(ctx context.Context, benchDir, repoDir, dir string) (binaries, error) {
	builds := []struct{ moduleDir, pkg, out string }{
		{benchDir, "./cmd/benchserver", "benchserver"},
		{benchDir, "./cmd/grpcserver", "grpcserver"},
		{repoDir, "./examples/gateway", "gateway"},
	}
	for _, b := range builds {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = b.moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return binaries{}, fmt.Errorf("go build %s in %s: %w\n%s", b.pkg, b.moduleDir, err, out)
		}
	}
	// goms's tests, for BenchmarkClient (in-process vs loopback).
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", filepath.Join(dir, "goms.test"), "./goms")
	cmd.Dir = repoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, fmt.Errorf("go test -c ./goms in %s: %w\n%s", repoDir, err, out)
	}
	logDir := dir
	// On tmpfs the access log of goms costs what a pipe would, with no
	// disk behind it.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		logDir = "/dev/shm"
	}
	return binaries{dir: dir, logDir: logDir}, nil
}

func (b binaries) path(name string) string { return filepath.Join(b.dir, name) }

// process is a running server program.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    *os.File // stderr
	waited chan struct{}
	err    error // of Wait, once waited is closed
}

// childEnv is the environment of the programs the harness runs: its own,
// without OTEL_* (tracing stays off, as on a machine without a collector),
// and with the GOMAXPROCS the runtime would choose when bound to cpus.
func childEnv(cpus []int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	if len(cpus) > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(len(cpus)))
	}
	return env
}

// newProcess prepares bin with args; bound to cpus when not empty, it
// also gets the GOMAXPROCS the runtime would choose under taskset. Its
// stderr goes to a file of logDir.
func newProcess(name, bin string, args []string, cpus []int, logDir string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(cpus)
	// O_APPEND lets truncateLog empty the file under the running process.
	log, err := admin.CreateAppend(logDir, "goms-bench-"+filepath.Base(bin)+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stderr = log
	return &process{name: name, cmd: cmd, log: log, waited: make(chan struct{})}, nil
}

// start runs the process and binds it to cpus when not empty.
func (p *process) start(cpus []int) error {
	err := p.cmd.Start()
	_ = p.log.Close() // the child has its own descriptor
	if err != nil {
		p.removeLog()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.waited)
	}()
	if len(cpus) > 0 {
		if err := pin.Process(p.cmd.Process.Pid, cpus); err != nil {
			_ = p.stop()
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return nil
}

// startServer starts a benchmark server of kind k and waits for its
// admin.Hello line. With profileDir set, the server writes a CPU profile
// of its whole run there, named after k, when it stops.
func startServer(ctx context.Context, bins binaries, k Kind, cpus []int, profileDir string) (*server, error) {
	args := []string{"-kind", string(k)}
	if profileDir != "" {
		args = append(args, "-cpuprofile", filepath.Join(profileDir, string(k)+".pprof"))
	}
	p, err := newProcess(k.Label(), bins.path(k.binary()), args, cpus, bins.logDir)
	if err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.start(cpus); err != nil {
		return nil, err
	}
	type line struct {
		hello admin.Hello
		err   error
	}
	lines := make(chan line, 1)
	go func() {
		var l line
		raw, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err != nil {
			l.err = fmt.Errorf("reading its hello line: %w", err)
		} else {
			l.err = json.Unmarshal(raw, &l.hello)
		}
		lines <- l
		_, _ = io.Copy(io.Discard, stdout)
	}()
	fail := func(err error) (*server, error) {
		tail := p.logTail()
		_ = p.stop()
		return nil, fmt.Errorf("%s: %w\n%s", p.name, err, tail)
	}
	select {
	case l := <-lines:
		if l.err != nil {
			return fail(l.err)
		}
		return &server{kind: k, process: p, hello: l.hello, admin: admin.NewClient(l.hello.Admin)}, nil
	case <-time.After(30 * time.Second):
		return fail(errors.New("no hello line after 30s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL if the process still runs after 10s,
// and returns an error if it exited abnormally before being asked to.
func (p *process) stop() error {
	defer p.removeLog()
	select {
	case <-p.waited:
		return fmt.Errorf("%s exited early: %v\n%s", p.name, p.err, p.logTail())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.waited
	}
	return nil
}

// alive returns an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.waited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail())
	default:
		return nil
	}
}

// server is a running benchmark server.
type server struct {
	kind Kind
	*process
	hello admin.Hello
	admin *admin.Client
}

// procStatus returns a field of /proc/pid/status in bytes (VmRSS, VmHWM).
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(l, field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// resetPeakRSS sets VmHWM back to the current RSS, so that it tells the
// peak of what follows.
func resetPeakRSS(pid int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// logTail returns the end of the process's stderr.
func (p *process) logTail() string {
	const tail = 4 << 10
	f, err := os.Open(p.log.Name())
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	return string(b)
}

// truncateLog empties the process's stderr file, which a server may fill
// with a record per call.
func (p *process) truncateLog() error {
	return os.Truncate(p.log.Name(), 0)
}

// truncateLogs empties the server's stderr file and its access log file,
// if it announced one.
func (s *server) truncateLogs() error {
	if err := s.truncateLog(); err != nil {
		return err
	}
	if s.hello.AccessLog == "" {
		return nil
	}
	return os.Truncate(s.hello.AccessLog, 0)
}

// checkAccessLog returns an error if the server announced an access log
// file and it is empty: after a case, it holds a record per call.
func (s *server) checkAccessLog() error {
	if s.hello.AccessLog == "" {
		return nil
	}
	st, err := os.Stat(s.hello.AccessLog)
	if err != nil {
		return fmt.Errorf("%s: access log: %w", s.kind.Label(), err)
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s: the access log %s stayed empty under load", s.kind.Label(), s.hello.AccessLog)
	}
	return nil
}

// removeLog deletes the stderr file once the process has stopped.
func (p *process) removeLog() { _ = os.Remove(p.log.Name()) }
