package goms_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
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

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// rpcClient calls the test service in one protocol, with connect-go or
// grpc-go.
type rpcClient struct {
	name string
	// create makes an item; requestID, when set, goes in X-Request-Id.
	create func(ctx context.Context, name, requestID string) (*gomsv1.Item, error)
	get    func(ctx context.Context, id string) error
	list   func(ctx context.Context) error
	delete func(ctx context.Context, id string) error
	// watch opens a Watch stream, which ends when ctx does; close
	// releases it once recv has failed.
	watch func(ctx context.Context) (recv func() (*gomsv1.WatchResponse, error), close func(), err error)
}

// connectClient is an rpcClient on connect-go.
func connectClient(name string, hc *http.Client, baseURL string, opts ...connect.ClientOption) *rpcClient {
	c := gomsv1connect.NewGoMsServiceClient(hc, baseURL, opts...)
	return &rpcClient{
		name: name,
		create: func(ctx context.Context, name, requestID string) (*gomsv1.Item, error) {
			req := connect.NewRequest(&gomsv1.CreateRequest{Name: name})
			if requestID != "" {
				req.Header().Set(goms.RequestIDHeader, requestID)
			}
			res, err := c.Create(ctx, req)
			if err != nil {
				return nil, err
			}
			return res.Msg.GetItem(), nil
		},
		get: func(ctx context.Context, id string) error {
			_, err := c.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: id}))
			return err
		},
		list: func(ctx context.Context) error {
			_, err := c.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 5}))
			return err
		},
		delete: func(ctx context.Context, id string) error {
			_, err := c.Delete(ctx, connect.NewRequest(&gomsv1.DeleteRequest{Id: id}))
			return err
		},
		watch: func(ctx context.Context) (func() (*gomsv1.WatchResponse, error), func(), error) {
			stream, err := c.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
			if err != nil {
				return nil, nil, err
			}
			recv := func() (*gomsv1.WatchResponse, error) {
				if stream.Receive() {
					return stream.Msg(), nil
				}
				if err := stream.Err(); err != nil {
					return nil, err
				}
				return nil, io.EOF
			}
			return recv, func() { _ = stream.Close() }, nil
		},
	}
}

// grpcgoClient is an rpcClient on grpc-go, with a connection of its own
// closed at the end of the test.
func grpcgoClient(t *testing.T, name, addr string) *rpcClient {
	conn := dialGRPC(t, addr)
	return &rpcClient{
		name: name,
		create: func(ctx context.Context, name, requestID string) (*gomsv1.Item, error) {
			if requestID != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, goms.RequestIDHeader, requestID)
			}
			res := new(gomsv1.CreateResponse)
			if err := conn.Invoke(ctx, gomsv1connect.GoMsServiceCreateProcedure, &gomsv1.CreateRequest{Name: name}, res); err != nil {
				return nil, err
			}
			return res.GetItem(), nil
		},
		get: func(ctx context.Context, id string) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: id}, new(gomsv1.GetResponse))
		},
		list: func(ctx context.Context) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceListProcedure, &gomsv1.ListRequest{PageSize: 5}, new(gomsv1.ListResponse))
		},
		delete: func(ctx context.Context, id string) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceDeleteProcedure, &gomsv1.DeleteRequest{Id: id}, new(gomsv1.DeleteResponse))
		},
		watch: func(ctx context.Context) (func() (*gomsv1.WatchResponse, error), func(), error) {
			desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
			stream, err := conn.NewStream(ctx, desc, gomsv1connect.GoMsServiceWatchProcedure)
			if err != nil {
				return nil, nil, err
			}
			if err := stream.SendMsg(&gomsv1.WatchRequest{}); err != nil {
				return nil, nil, err
			}
			if err := stream.CloseSend(); err != nil {
				return nil, nil, err
			}
			recv := func() (*gomsv1.WatchResponse, error) {
				ev := new(gomsv1.WatchResponse)
				if err := stream.RecvMsg(ev); err != nil {
					return nil, err
				}
				return ev, nil
			}
			return recv, func() {}, nil // the stream ends with ctx
		},
	}
}

// rpcCode returns the code of an error of connect-go or grpc-go.
func rpcCode(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	if st, ok := status.FromError(err); ok {
		return connect.Code(st.Code())
	}
	return connect.CodeUnknown
}

// errorSample keeps the first few distinct errors of a load run.
type errorSample struct {
	mu   sync.Mutex
	n    int
	errs []string
}

func (s *errorSample) add(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if len(s.errs) < 10 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

func (s *errorSample) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *errorSample) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, e := range s.errs {
		fmt.Fprintf(&b, "\n\t%s", e)
	}
	return b.String()
}
