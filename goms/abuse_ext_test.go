package goms_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// The abuse tests run one after the other, not in parallel, so that the
// memory and goroutine figures they compare are their own server's.

// Limits of the abuse server: short timeouts, so that the tests see them
// fire, and few streams per connection.
const (
	abuseReadHeaderTimeout = 500 * time.Millisecond
	abuseIdleTimeout       = time.Second
	abuseMaxStreams        = 10
)

// abuseServer is a server with a gateway listener (net/http) and a grpc
// listener (the grpc engine), the abuse limits, the test services, and
// the process's heap and goroutines as they were once it served.
type abuseServer struct {
	*gomstest.Running
	base memFigures
}

func startAbuseServer(t *testing.T, mount func(*goms.Server) error) *abuseServer {
	t.Helper()
	run := gomstest.Start(t, goms.Config{
		Listeners:            []goms.Listener{{Name: "gateway"}, {Name: "grpc", Mode: goms.ModeGRPC}},
		ReadHeaderTimeout:    abuseReadHeaderTimeout,
		IdleTimeout:          abuseIdleTimeout,
		MaxConcurrentStreams: abuseMaxStreams,
	}, mount)
	s := &abuseServer{Running: run}
	s.normalCalls(t)
	s.base = readMem()
	return s
}

// normalCalls makes a normal call on each listener, each on a new
// connection.
func (s *abuseServer) normalCalls(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		listener string
		opts     []connect.ClientOption
	}{
		{"gateway", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	} {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		transport := &http.Transport{Protocols: &p}
		client := gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: transport}, s.URL(c.listener), c.opts...)
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		_, err := client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
		cancel()
		transport.CloseIdleConnections()
		if err != nil {
			t.Fatalf("%s: a normal call: %v", c.listener, err)
		}
	}
}

// recovered checks that a normal call succeeds after the abuse, and that
// the heap and the goroutines come back near what they were before it:
// every connection's goroutines ended and its buffers were freed.
func (s *abuseServer) recovered(t *testing.T, what string) {
	t.Helper()
	s.normalCalls(t)
	var now memFigures
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		now = readMem()
		if now.heap <= s.base.heap+8<<20 && now.goroutines <= s.base.goroutines+5 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%s: then a normal call succeeded; heap %s -> %s, goroutines %d -> %d",
		what, mib(s.base.heap), mib(now.heap), s.base.goroutines, now.goroutines)
	if now.heap > s.base.heap+8<<20 {
		t.Errorf("%s: the heap grew from %s to %s", what, mib(s.base.heap), mib(now.heap))
	}
	if now.goroutines > s.base.goroutines+5 {
		t.Errorf("%s: %d goroutines after, %d before", what, now.goroutines, s.base.goroutines)
	}
}

// grpcGoDrainWait is how long grpc-go waits, once it closes an idle
// connection, for the answer to the ping that follows its first GOAWAY
// before it sends the second and hangs up. A slowloris client never
// answers.
const grpcGoDrainWait = 5 * time.Second

// slowest keeps the longest of durations stored concurrently.
type slowest struct{ d atomic.Int64 }

func (s *slowest) add(d time.Duration) {
	for {
		old := s.d.Load()
		if int64(d) <= old || s.d.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (s *slowest) get() time.Duration {
	return time.Duration(s.d.Load()).Round(10 * time.Millisecond)
}

// TestSlowloris opens connections that send part of a request and then
// stall, or trickle it a byte at a time, on both engines: the server must
// close each by its timeouts (ReadHeaderTimeout for HTTP/1.1 headers and
// the HTTP/2 preface, IdleTimeout for an HTTP/2 connection without a
// complete stream), free what they held, and serve normally.
func TestSlowloris(t *testing.T) {
	srv := startAbuseServer(t, nil)
	cases := []struct {
		name    string
		start   []byte
		trickle []byte // sent a byte every 100ms after start
		limit   time.Duration
		// grpcLimit, when set, is the limit on the grpc listener.
		grpcLimit time.Duration
	}{
		{name: "http1-partial-request-line", start: []byte("POST /goms.v1.GoMsService/List HT"), limit: abuseReadHeaderTimeout},
		{
			name:    "http1-trickled-headers",
			start:   []byte("GET /healthz HTTP/1.1\r\nHost: goms.test\r\n"),
			trickle: []byte("X-Slow: " + strings.Repeat("z", 100)),
			limit:   abuseReadHeaderTimeout,
		},
		{name: "h2-partial-preface", start: []byte(http2.ClientPreface[:20]), limit: abuseReadHeaderTimeout},
		// net/http closes an idle HTTP/2 connection 1s after its GOAWAY;
		// grpc-go waits ReadHeaderTimeout for the client's SETTINGS.
		{name: "h2-preface-only", start: []byte(http2.ClientPreface), limit: abuseIdleTimeout + time.Second, grpcLimit: abuseReadHeaderTimeout},
		{
			name:      "h2-unfinished-headers",
			start:     newH2Frames().preface().headers(1, "POST", gomsv1connect.GoMsServiceListProcedure, "application/grpc", false, false).bytes(),
			limit:     abuseIdleTimeout + time.Second,
			grpcLimit: abuseIdleTimeout + grpcGoDrainWait,
		},
	}
	const conns = 20 // of each case on each listener
	// Timers fire late on a loaded machine.
	const slack = 3 * time.Second
	var wg sync.WaitGroup
	type key struct{ listener, name string }
	closed := make(map[key]*slowest)
	for _, listener := range []string{"gateway", "grpc"} {
		for _, c := range cases {
			name := listener + "/" + c.name
			limit := c.limit
			if listener == "grpc" && c.grpcLimit > 0 {
				limit = c.grpcLimit
			}
			last := new(slowest)
			closed[key{listener, c.name}] = last
			for range conns {
				conn := dial(t, srv.Addr(listener))
				wg.Go(func() {
					start := time.Now()
					if _, err := conn.Write(c.start); err != nil {
						t.Errorf("%s: %v", name, err)
						return
					}
					if len(c.trickle) > 0 {
						go func() {
							for i := range c.trickle {
								time.Sleep(100 * time.Millisecond)
								if _, err := conn.Write(c.trickle[i : i+1]); err != nil {
									return // closed by the server
								}
							}
						}()
					}
					took, err := awaitClose(conn, start, limit+slack, false)
					if err != nil {
						t.Errorf("%s: %v (limit %v)", name, err, limit)
						return
					}
					last.add(took)
				})
			}
		}
	}
	wg.Wait()
	for _, listener := range []string{"gateway", "grpc"} {
		for _, c := range cases {
			t.Logf("%s/%s: %d connections closed, the last %v after it connected", listener, c.name, conns, closed[key{listener, c.name}].get())
		}
	}
	srv.recovered(t, "slowloris")
}

// TestIdleConnectionFlood opens hundreds of connections on both engines
// and leaves them idle: silent TCP connections, HTTP/1.1 keep-alive
// connections after a request, and h2c connections after a gRPC call
// (whose client answers the server's pings, as a pool does). The server
// must close every one by its timeouts, ReadHeaderTimeout for the silent
// ones and IdleTimeout for the others, and free what they held.
func TestIdleConnectionFlood(t *testing.T) {
	srv := startAbuseServer(t, nil)
	healthCheck := newH2Frames().preface().
		headers(1, "POST", "/grpc.health.v1.Health/Check", "application/grpc", false, true).
		data(1, envelope(0, nil), true).bytes()
	kinds := []struct {
		name  string
		n     int
		send  []byte
		pong  bool
		limit time.Duration
	}{
		{"silent-tcp", 200, nil, false, abuseReadHeaderTimeout},
		{"http1-keep-alive", 100, []byte("GET /healthz HTTP/1.1\r\nHost: goms.test\r\n\r\n"), false, abuseIdleTimeout},
		// net/http closes an idle HTTP/2 connection 1s after its GOAWAY
		// unless the client hangs up first.
		{"h2c-after-grpc-call", 200, healthCheck, true, abuseIdleTimeout + time.Second},
	}
	const slack = 2 * time.Second // timers fire late on a loaded machine
	var wg sync.WaitGroup
	type key struct{ listener, name string }
	closed := make(map[key]*slowest)
	for _, listener := range []string{"gateway", "grpc"} {
		for _, k := range kinds {
			last := new(slowest)
			closed[key{listener, k.name}] = last
			for range k.n {
				conn := dial(t, srv.Addr(listener))
				wg.Go(func() {
					start := time.Now()
					if _, err := conn.Write(k.send); err != nil {
						t.Errorf("%s/%s: %v", listener, k.name, err)
						return
					}
					took, err := awaitClose(conn, start, k.limit+slack, k.pong)
					if err != nil {
						t.Errorf("%s/%s: %v (limit %v)", listener, k.name, err, k.limit)
						return
					}
					last.add(took)
				})
			}
		}
	}
	wg.Wait()
	for _, listener := range []string{"gateway", "grpc"} {
		for _, k := range kinds {
			t.Logf("%s/%s: %d connections closed, the last %v after it connected", listener, k.name, k.n, closed[key{listener, k.name}].get())
		}
	}
	srv.recovered(t, "idle flood")
}

// floodID is the item id of the calls of TestStreamFlood.
const floodID = "f100df100df100d0"

// countingService is the test service whose Get of floodID answers
// once its gate opens, and which records how many such calls run at once.
type countingService struct {
	*testservice.GoMs
	gate          chan struct{}
	running, peak atomic.Int64
}

func (s *countingService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if req.Msg.GetId() != floodID {
		return s.GoMs.Get(ctx, req)
	}
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for old := s.peak.Load(); n > old && !s.peak.CompareAndSwap(old, n); old = s.peak.Load() {
	}
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

// TestStreamFlood opens three times MaxConcurrentStreams streams on one
// HTTP/2 connection at once, ignoring the limit the server announced, on
// both engines: the server must refuse the streams past the limit with
// RST_STREAM and never run more calls at once than the limit, then finish
// the calls it took.
func TestStreamFlood(t *testing.T) {
	const streams = 3 * abuseMaxStreams
	get, err := proto.Marshal(&gomsv1.GetRequest{Id: floodID})
	if err != nil {
		t.Fatal(err)
	}
	for _, listener := range []string{"gateway", "grpc"} {
		svc := &countingService{GoMs: testservice.NewGoMs(), gate: make(chan struct{})}
		srv := startAbuseServer(t, func(srv *goms.Server) error {
			return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
		})
		conn := dial(t, srv.Addr(listener))
		f := newH2Frames().preface()
		for i := range streams {
			id := uint32(2*i + 1)
			f.headers(id, "POST", gomsv1connect.GoMsServiceGetProcedure, "application/grpc", false, true).data(id, envelope(0, get), true)
		}
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		refused := make(map[uint32]http2.ErrCode)
		finished := make(map[uint32]bool)
		readDone := make(chan error, 1)
		go func() {
			fr := http2.NewFramer(conn, conn)
			for {
				frame, err := fr.ReadFrame()
				if err != nil {
					readDone <- err
					return
				}
				mu.Lock()
				switch frame := frame.(type) {
				case *http2.RSTStreamFrame:
					// The first reset refuses the stream; more may answer
					// its DATA frame.
					if _, seen := refused[frame.StreamID]; !seen && !finished[frame.StreamID] {
						refused[frame.StreamID] = frame.ErrCode
					}
				case *http2.HeadersFrame:
					if frame.StreamEnded() {
						finished[frame.StreamID] = true
					}
				case *http2.PingFrame:
					if !frame.IsAck() {
						_ = fr.WritePing(true, frame.Data)
					}
				}
				mu.Unlock()
			}
		}()
		counts := func() (int, int) {
			mu.Lock()
			defer mu.Unlock()
			return len(refused), len(finished)
		}
		waitFor := func(what string, ok func() bool) {
			t.Helper()
			for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					r, f := counts()
					t.Fatalf("%s: no %s after 10s: %d calls running, %d streams refused, %d finished", listener, what, svc.running.Load(), r, f)
				}
			}
		}
		waitFor("full house", func() bool {
			r, _ := counts()
			return svc.running.Load() == abuseMaxStreams && r == streams-abuseMaxStreams
		})
		time.Sleep(200 * time.Millisecond) // room for a call past the limit to show up
		peak := svc.peak.Load()
		close(svc.gate)
		waitFor("end of the admitted calls", func() bool {
			_, f := counts()
			return f == abuseMaxStreams
		})
		mu.Lock()
		codes := make(map[http2.ErrCode]int)
		for _, code := range refused {
			codes[code]++
		}
		mu.Unlock()
		_ = conn.Close()
		<-readDone
		t.Logf("%s: %d streams opened at once: %d ran (at most %d at a time), %d refused %v", listener, streams, abuseMaxStreams, peak, streams-abuseMaxStreams, codes)
		if peak > abuseMaxStreams {
			t.Errorf("%s: %d calls ran at once on one connection, over the limit of %d", listener, peak, abuseMaxStreams)
		}
		if n := codes[http2.ErrCodeRefusedStream]; n != streams-abuseMaxStreams {
			t.Errorf("%s: %d streams refused with REFUSED_STREAM, want %d (codes %v)", listener, n, streams-abuseMaxStreams, codes)
		}
		srv.recovered(t, listener+" stream flood")
	}
}

// rawRPC posts body to a procedure of a listener over h2c with the given
// Content-Type and headers, and returns the code of the answer in the
// caller's protocol and how long it took. It fails the test when no
// answer comes within callTimeout.
func rawRPC(t *testing.T, client *http.Client, url, contentType string, header map[string]string, body []byte) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", url, err)
	}
	return answerCode(res, data), time.Since(start)
}

// gzipBomb returns gzip data that inflates to size bytes of zeros: one
// member of 1 MiB of zeros (about 1 KiB compressed) repeated, which every
// gzip reader concatenates. 1 GiB takes about 1 MiB, under the 4 MiB
// message limit.
func gzipBomb(t *testing.T, size int) []byte {
	t.Helper()
	var member bytes.Buffer
	zw, err := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(member.Bytes(), size>>20)
}

// TestCompressionBomb sends a message of about 1 MiB of gzip that
// inflates to 1 GiB, in every protocol and on both engines: it must fail
// with resource_exhausted at once, the server allocating a few times the
// 4 MiB message limit at most, nowhere near the inflated size.
func TestCompressionBomb(t *testing.T) {
	srv := startAbuseServer(t, nil)
	const inflated = 1 << 30
	bomb := gzipBomb(t, inflated)
	create, createMany := gomsv1connect.GoMsServiceCreateProcedure, gomsv1connect.GoMsServiceCreateManyProcedure
	cases := []struct {
		name, listener, procedure, contentType string
		header                                 map[string]string
		body                                   []byte
	}{
		{"connect-unary", "gateway", create, "application/proto", map[string]string{"Content-Encoding": "gzip"}, bomb},
		{"connect-stream", "gateway", createMany, "application/connect+proto", map[string]string{"Connect-Content-Encoding": "gzip"}, envelope(1, bomb)},
		{"grpcweb", "gateway", create, "application/grpc-web+proto", map[string]string{"Grpc-Encoding": "gzip"}, envelope(1, bomb)},
		{"grpc/nethttp", "gateway", create, "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, envelope(1, bomb)},
		{"grpc/grpc-engine", "grpc", create, "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, envelope(1, bomb)},
	}
	client := gomstest.H2C(t)
	for _, c := range cases {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		code, took := rawRPC(t, client, srv.URL(c.listener)+c.procedure, c.contentType, c.header, c.body)
		runtime.ReadMemStats(&after)
		allocated := int64(after.TotalAlloc - before.TotalAlloc)
		t.Logf("%s: %s of gzip inflating to %s: %s in %v, %s allocated by the process meanwhile",
			c.name, mib(int64(len(c.body))), mib(inflated), code, took.Round(time.Millisecond), mib(allocated))
		if code != connect.CodeResourceExhausted.String() {
			t.Errorf("%s: got %s, want resource_exhausted", c.name, code)
		}
		if allocated > 128<<20 {
			t.Errorf("%s: %s allocated while refusing the bomb", c.name, mib(allocated))
		}
		if took > 5*time.Second {
			t.Errorf("%s: the bomb took %v to refuse", c.name, took)
		}
	}
	client.CloseIdleConnections()
	srv.recovered(t, "compression bombs")
}

// TestMalformedEnvelopes sends enveloped bodies that break the framing of
// gRPC, gRPC-Web and Connect streams, on both engines: each must get a
// clean error in its protocol, promptly (rawRPC bounds the wait).
func TestMalformedEnvelopes(t *testing.T) {
	srv := startAbuseServer(t, nil)
	msg, err := proto.Marshal(&gomsv1.CreateRequest{Name: "envelope"})
	if err != nil {
		t.Fatal(err)
	}
	protocols := []struct {
		name, listener, procedure, contentType string
	}{
		{"grpc/nethttp", "gateway", gomsv1connect.GoMsServiceCreateProcedure, "application/grpc"},
		{"grpc/grpc-engine", "grpc", gomsv1connect.GoMsServiceCreateProcedure, "application/grpc"},
		{"grpcweb", "gateway", gomsv1connect.GoMsServiceCreateProcedure, "application/grpc-web+proto"},
		{"connect-stream", "gateway", gomsv1connect.GoMsServiceCreateManyProcedure, "application/connect+proto"},
	}
	// Every protocol and engine answers the same: resource_exhausted for
	// a length over the limit (without waiting for, or allocating, the
	// 4 GiB it announces), internal for framing errors.
	bodies := []struct {
		name string
		body []byte
		want connect.Code
	}{
		{"length-past-data", []byte("\x00\x00\x00\x00\x10abc"), connect.CodeInternal},
		{"length-4GiB", []byte("\x00\xff\xff\xff\xffabc"), connect.CodeResourceExhausted},
		{"cut-in-prefix", []byte("\x00\x00\x00"), connect.CodeInternal},
		{"reserved-flags", envelope(0x40, msg), connect.CodeInternal},
		{"compressed-without-encoding", envelope(0x01, msg), connect.CodeInternal},
		{"end-stream-flag-from-client", envelope(0x02, msg), connect.CodeInternal},
	}
	client := gomstest.H2C(t)
	for _, p := range protocols {
		for _, b := range bodies {
			code, took := rawRPC(t, client, srv.URL(p.listener)+p.procedure, p.contentType, nil, b.body)
			t.Logf("%s/%s: %s in %v", p.name, b.name, code, took.Round(time.Millisecond))
			if code != b.want.String() {
				t.Errorf("%s/%s: got %s, want %v", p.name, b.name, code, b.want)
			}
		}
	}
	client.CloseIdleConnections()
	srv.recovered(t, "malformed envelopes")
}

// TestInvalidUTF8 sends strings that are not UTF-8, in JSON and in binary
// protobuf, in every protocol and on both engines: each call must fail
// with invalid_argument.
func TestInvalidUTF8(t *testing.T) {
	srv := startAbuseServer(t, nil)
	create, createMany := gomsv1connect.GoMsServiceCreateProcedure, gomsv1connect.GoMsServiceCreateManyProcedure
	invalidJSON := []byte("{\"name\":\"bad \xff\xfe\"}")
	surrogateJSON := []byte(`{"name":"bad \ud800"}`)
	invalidProto := []byte("\x0a\x06bad \xff\xfe") // field 1 (name), 6 bytes
	cases := []struct {
		name, listener, procedure, contentType string
		body                                   []byte
	}{
		{"connect-json/raw", "gateway", create, "application/json", invalidJSON},
		{"connect-json/escaped-surrogate", "gateway", create, "application/json", surrogateJSON},
		{"connect-stream-json", "gateway", createMany, "application/connect+json", envelope(0, invalidJSON)},
		{"grpcweb-json", "gateway", create, "application/grpc-web+json", envelope(0, invalidJSON)},
		{"grpc-json/nethttp", "gateway", create, "application/grpc+json", envelope(0, invalidJSON)},
		{"grpc-json/grpc-engine", "grpc", create, "application/grpc+json", envelope(0, invalidJSON)},
		{"connect-proto", "gateway", create, "application/proto", invalidProto},
		{"grpc-proto/nethttp", "gateway", create, "application/grpc", envelope(0, invalidProto)},
		{"grpc-proto/grpc-engine", "grpc", create, "application/grpc", envelope(0, invalidProto)},
	}
	client := gomstest.H2C(t)
	for _, c := range cases {
		code, _ := rawRPC(t, client, srv.URL(c.listener)+c.procedure, c.contentType, nil, c.body)
		t.Logf("%s: %s", c.name, code)
		if code != connect.CodeInvalidArgument.String() {
			t.Errorf("%s: got %s, want invalid_argument", c.name, code)
		}
	}
	client.CloseIdleConnections()
	srv.recovered(t, "invalid UTF-8")
}
