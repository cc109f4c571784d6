package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

const testID = "0123456789abcdef"

// itemJSON is the JSON answer to Get of an item named name.
func itemJSON(t *testing.T, name string) []byte {
	t.Helper()
	b, err := protojson.Marshal(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: testID, Name: name}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testServer runs handler on a net/http server of 127.0.0.1 and counts the
// connections it accepts.
func testServer(t *testing.T, handler http.HandlerFunc) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

// newTestCaller returns the raw HTTP/1.1 caller of Get on testID.
func newTestCaller(t *testing.T, addr string, nameLen, conns int) Caller {
	t.Helper()
	c, err := NewCaller(ConnectJSONHTTP1, addr, testID, nameLen, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// checkRequest fails the call unless r is the Connect JSON Get of testID.
func checkRequest(w http.ResponseWriter, r *http.Request) bool {
	body, err := io.ReadAll(r.Body)
	var req gomsv1.GetRequest
	switch {
	case err != nil:
	case r.Method != http.MethodPost || r.URL.Path != gomsv1connect.GoMsServiceGetProcedure || r.ProtoMajor != 1 || r.ProtoMinor != 1:
		err = fmt.Errorf("request %s %s %s", r.Method, r.URL.Path, r.Proto)
	case r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Connect-Protocol-Version") != "1":
		err = fmt.Errorf("headers %v", r.Header)
	case r.Host == "" || r.ContentLength != int64(len(body)):
		err = fmt.Errorf("host %q, Content-Length %d for %d bytes", r.Host, r.ContentLength, len(body))
	default:
		if err = protojson.Unmarshal(body, &req); err == nil && req.GetId() != testID {
			err = fmt.Errorf("id %q", req.GetId())
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// callN makes n calls from workers goroutines and returns the first error.
func callN(c Caller, workers, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var left atomic.Int64
	left.Store(int64(n))
	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := c.Call(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func TestHTTP1CallerContentLength(t *testing.T) {
	t.Parallel()
	body := itemJSON(t, "bench-item")
	addr, conns := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if checkRequest(w, r) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}
	})
	c := newTestCaller(t, addr, len("bench-item"), 4)
	if err := callN(c, 4, 400); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n < 1 || n > 4 {
		t.Errorf("%d connections for 4 workers", n)
	}
}

func TestHTTP1CallerChunked(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("x", 10<<10)
	body := itemJSON(t, name)
	addr, conns := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r) {
			return
		}
		// Flushing before the end makes net/http send the body chunked,
		// and the trailer comes after the last chunk.
		w.Header().Set("Trailer", "X-Check")
		_, _ = w.Write(body[:10])
		w.(http.Flusher).Flush()
		_, _ = w.Write(body[10:])
		w.Header().Set("X-Check", "done")
	})
	c := newTestCaller(t, addr, len(name), 2)
	if err := callN(c, 2, 100); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("%d connections for 2 workers", n)
	}
}

func TestHTTP1CallerConnectHandler(t *testing.T) {
	t.Parallel()
	svc := gomsservice.New()
	created, err := svc.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "bench-item"}))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gomsv1connect.NewGoMsServiceHandler(svc))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := NewCaller(ConnectJSONHTTP1, srv.Listener.Addr().String(), created.Msg.GetItem().GetId(), len("bench-item"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := callN(c, 2, 200); err != nil {
		t.Fatal(err)
	}
}

func TestHTTP1CallerRejectsWrongBodies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		bodies []string // answers in turn; the last one repeats
		want   string   // in the error of the call that gets the last answer
		// thenOK says whether the call after that, on a new connection
		// whose first answer is checked afresh, succeeds.
		thenOK bool
	}{
		{"wrong name length first", []string{string(itemJSON(t, "bench-itemX"))}, "want 10", false},
		{"not JSON", []string{"{nope"}, "decoding the body", false},
		{"empty", []string{""}, "empty body", false},
		{"changed later", []string{string(itemJSON(t, "bench-item")), string(itemJSON(t, "bench-itex"))}, "differs from the first", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			addr, conns := testServer(t, func(w http.ResponseWriter, r *http.Request) {
				if checkRequest(w, r) {
					_, _ = io.WriteString(w, tc.bodies[min(int(n.Add(1))-1, len(tc.bodies)-1)])
				}
			})
			c := newTestCaller(t, addr, len("bench-item"), 1)
			var err error
			for range tc.bodies {
				err = c.Call(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("call: %v, want an error with %q", err, tc.want)
			}
			if err := c.Call(context.Background()); (err == nil) != tc.thenOK {
				t.Errorf("next call: %v, want success %v", err, tc.thenOK)
			}
			if got := conns.Load(); got != 2 {
				t.Errorf("%d connections, want 2: a wrong answer closes its connection", got)
			}
		})
	}
}

func TestHTTP1CallerRejectsStatus(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if checkRequest(w, r) {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}
	})
	err := newTestCaller(t, addr, 10, 1).Call(context.Background())
	if err == nil || !strings.Contains(err.Error(), "status 503: overloaded") {
		t.Errorf("call: %v, want status 503 and the body", err)
	}
}

func TestHTTP1CallerConnectionClose(t *testing.T) {
	t.Parallel()
	body := itemJSON(t, "bench-item")
	addr, conns := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if checkRequest(w, r) {
			w.Header().Set("Connection", "close")
			_, _ = w.Write(body)
		}
	})
	c := newTestCaller(t, addr, 10, 1)
	if err := callN(c, 1, 5); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections for 5 calls answered with Connection: close", n)
	}
}

// hijacked answers each call with raw, written on the connection taken
// from net/http, which it then closes if closeAfter is set.
func hijacked(t *testing.T, raw string, closeAfter bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r) {
			return
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = buf.WriteString(raw)
		_ = buf.Flush()
		if closeAfter {
			_ = conn.Close()
			return
		}
		// Keep serving the connection: read the next requests and answer
		// them alike, until the client closes it.
		go func() {
			defer func() { _ = conn.Close() }()
			for {
				req, err := http.ReadRequest(buf.Reader)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				if _, err := conn.Write([]byte(raw)); err != nil {
					return
				}
			}
		}()
	}
}

func TestHTTP1CallerServerClosesSilently(t *testing.T) {
	t.Parallel()
	body := itemJSON(t, "bench-item")
	raw := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	addr, conns := testServer(t, hijacked(t, raw, true))
	c := newTestCaller(t, addr, 10, 1)
	for i := range 5 {
		if err := c.Call(context.Background()); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		// Let the close reach the client before the next call.
		time.Sleep(5 * time.Millisecond)
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections for 5 calls on connections closed after each", n)
	}
}

func TestHTTP1CallerRawFraming(t *testing.T) {
	t.Parallel()
	body := string(itemJSON(t, "bench-item"))
	for _, tc := range []struct {
		name, raw  string
		closeAfter bool
		want       string // in the error; "" for success
		wantConns  int64  // connections for the 3 calls; 0 leaves it unchecked
	}{
		{"chunk extensions and trailers",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Check: done\r\n\r\n", body[:3], len(body)-3, body[3:]), false, "", 0},
		{"body to the end of the connection",
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body, true, "", 0},
		// The server keeps the connection; the client must not reuse it.
		{"HTTP/1.0", fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false, "", 3},
		{"other Transfer-Encoding",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false, "unsupported Transfer-Encoding", 0},
		{"both lengths",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", false, "both Content-Length and Transfer-Encoding", 0},
		{"cut short",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+5, body), true, "unexpected EOF", 0},
		{"no status line", "hello\r\n\r\n", true, "malformed status line", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, conns := testServer(t, hijacked(t, tc.raw, tc.closeAfter))
			c := newTestCaller(t, addr, 10, 1)
			for range 3 {
				err := c.Call(context.Background())
				if tc.want == "" && err != nil {
					t.Fatal(err)
				}
				if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Fatalf("call: %v, want an error with %q", err, tc.want)
				}
			}
			if n := conns.Load(); tc.wantConns != 0 && n != tc.wantConns {
				t.Errorf("%d connections for 3 calls, want %d", n, tc.wantConns)
			}
		})
	}
}

func TestHTTP1CallerContextEndsCall(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	addr, _ := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if checkRequest(w, r) {
			<-release
		}
	})
	c := newTestCaller(t, addr, 10, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("call: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the call took %v after its context ended", d)
	}
}

func TestHTTP1CallerAllocations(t *testing.T) {
	// A server that allocates nothing per call, as allocations are counted
	// process-wide: it reads each request, whose length is known, and
	// writes the same answer.
	body := itemJSON(t, "bench-item")
	answer := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c := newTestCaller(t, ln.Addr().String(), 10, 1)
	reqLen := len(c.(*http1Caller).req)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		buf := make([]byte, reqLen)
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				return
			}
			if _, err := conn.Write(answer); err != nil {
				return
			}
		}
	}()
	if err := c.Call(context.Background()); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := c.Call(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per call on a checked connection, want none", allocs)
	}
}
