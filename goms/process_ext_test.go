package goms_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serverBuild is goms/internal/testcmd/server, built once per test process
// into a directory TestMain removes.
var serverBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// serverBinary returns the path of the test server's binary, building it
// on first use. It is built without the race detector whatever the tests
// run with, so that its memory figures are those of a real server.
func serverBinary(t *testing.T) string {
	t.Helper()
	serverBuild.once.Do(func() {
		serverBuild.dir, serverBuild.err = os.MkdirTemp("", "goms-testcmd-")
		if serverBuild.err != nil {
			return
		}
		path := filepath.Join(serverBuild.dir, "server")
		cmd := exec.Command("go", "build", "-o", path, "github.com/reversTeam/go-ms/goms/internal/testcmd/server")
		if out, err := cmd.CombinedOutput(); err != nil {
			serverBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		serverBuild.path = path
	})
	if serverBuild.err != nil {
		t.Fatalf("building the test server: %v", serverBuild.err)
	}
	return serverBuild.path
}

// removeServerBuild removes what serverBinary built.
func removeServerBuild() {
	if serverBuild.dir != "" {
		_ = os.RemoveAll(serverBuild.dir)
	}
}

// serverProcess is a running goms/internal/testcmd/server.
type serverProcess struct {
	name   string
	cmd    *exec.Cmd
	addrs  map[string]string // listener name -> host:port
	stderr string            // file holding its standard error
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// startServerProcess starts the test server with args and waits until it
// listens. The test's cleanup kills it if it still runs.
func startServerProcess(t *testing.T, name string, args ...string) *serverProcess {
	t.Helper()
	return startProcess(t, exec.Command(serverBinary(t), args...), name)
}

// startProcess starts cmd, a server that prints its addresses as a JSON
// object on its first line, and waits until it listens.
func startProcess(t *testing.T, cmd *exec.Cmd, name string) *serverProcess {
	t.Helper()
	p, err := tryStartProcess(t, cmd, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryStartServerProcess is startServerProcess, returning an error when the
// process does not start listening.
func tryStartServerProcess(t *testing.T, name string, args ...string) (*serverProcess, error) {
	t.Helper()
	return tryStartProcess(t, exec.Command(serverBinary(t), args...), name)
}

// tryStartProcess is startProcess, returning an error when the process
// does not start listening. The test's cleanup kills it if it still runs.
func tryStartProcess(t *testing.T, cmd *exec.Cmd, name string) (*serverProcess, error) {
	t.Helper()
	stderr, err := os.CreateTemp(t.TempDir(), name+"-*.stderr")
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &serverProcess{name: name, cmd: cmd, stderr: stderr.Name(), done: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = cmd.Process.Kill()
		<-p.done
	})
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- b
	}()
	var addrs []byte
	select {
	case addrs = <-line:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := json.Unmarshal(addrs, &p.addrs); err != nil {
		<-p.done
		return nil, fmt.Errorf("%s printed %q, not its addresses (%v); its standard error:\n%s", name, addrs, err, p.stderrText(t))
	}
	return p, nil
}

func (p *serverProcess) url(listener string) string { return "http://" + p.addrs[listener] }

func (p *serverProcess) stderrText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stop sends SIGTERM and returns how long the process took to exit and its
// exit error, failing the test after timeout.
func (p *serverProcess) stop(t *testing.T, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
		return time.Since(start), p.err
	case <-time.After(timeout):
		t.Fatalf("%s still runs %v after SIGTERM", p.name, timeout)
		return 0, nil
	}
}

// rss returns the resident set size of the process, from /proc.
func (p *serverProcess) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kib << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}

// admin fetches a path of the admin listener over a connection of its own.
func (p *serverProcess) admin(t *testing.T, path string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := client.Get(p.url("admin") + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", path, res.StatusCode, err)
	}
	return string(b)
}

// goroutines returns the number of goroutines of the process, from pprof.
func (p *serverProcess) goroutines(t *testing.T) int {
	t.Helper()
	body := p.admin(t, "/debug/pprof/goroutine?debug=1")
	var n int
	if _, err := fmt.Sscanf(body, "goroutine profile: total %d", &n); err != nil {
		t.Fatalf("goroutine profile %q: %v", first([]byte(body)), err)
	}
	return n
}

// heapAlloc returns the bytes of live heap objects of the process after a
// garbage collection, from pprof.
func (p *serverProcess) heapAlloc(t *testing.T) int64 {
	t.Helper()
	body := p.admin(t, "/debug/pprof/heap?debug=1&gc=1")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no HeapAlloc in the heap profile")
	return 0
}

// accessLog returns the access log records the process wrote, one per
// call, keyed by request id.
func (p *serverProcess) accessLog(t *testing.T) map[string]accessRecord {
	t.Helper()
	records := make(map[string]accessRecord)
	for line := range strings.Lines(p.stderrText(t)) {
		var r accessRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s wrote %q, not JSON: %v", p.name, line, err)
		}
		if r.Msg == "goms: call" {
			records[r.RequestID] = r
		}
	}
	return records
}

// accessRecord is one access log record of the test server.
type accessRecord struct {
	Msg       string `json:"msg"`
	Procedure string `json:"procedure"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}
