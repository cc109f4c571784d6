package goms_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// The tests of this file build the attacks of docs/security.md by hand,
// frame by frame, against a gateway listener (net/http) and a grpc
// listener (the grpc engine).

// TestSniffedConnectionMemory opens connections whose first request's
// header block is cut into many CONTINUATION frames (512 KiB of HPACK
// table size updates before its fields), makes a List call on each and
// leaves them open and idle: each must then hold no more of the live heap
// than an ordinary idle connection, on both engines. The grpc engine's
// router used to keep every byte it had sniffed for the connection's life.
func TestSniffedConnectionMemory(t *testing.T) {
	srv := connAttackServer(t, goms.Config{})
	list, err := proto.Marshal(&gomsv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const conns = 40
	const fill = 512 << 10
	const limit = 200 << 10 // per connection
	for _, listener := range []string{"gateway", "grpc"} {
		before := readMem()
		open := make([]net.Conn, 0, conns)
		for range conns {
			c := dial(t, srv.Addr(listener))
			open = append(open, c)
			attack := newH2Frames().preface().
				splitHeaders(1, fill, gomsv1connect.GoMsServiceListProcedure, "application/grpc", true).
				data(1, envelope(0, list), true).bytes()
			if err := c.SetDeadline(time.Now().Add(callTimeout)); err != nil {
				t.Fatal(err)
			}
			go func() { _, _ = c.Write(attack) }()
			code, err := readGRPCStatus(responseFramer(c), 1)
			if err != nil || code != "0" {
				t.Fatalf("%s: List after a split header block: grpc-status %q, %v", listener, code, err)
			}
		}
		after := readMem()
		per := (after.heap - before.heap) / conns
		t.Logf("%s: %d idle connections after a %d KiB split header block: live heap %s -> %s, %d KiB each",
			listener, conns, fill>>10, mib(before.heap), mib(after.heap), per>>10)
		if per > limit {
			t.Errorf("%s: each idle connection holds %d KiB of live heap, want at most %d KiB", listener, per>>10, limit>>10)
		}
		for _, c := range open {
			_ = c.Close()
		}
	}
}

// TestHeaderTimeoutFromAccept sends the first bytes of a connection, then
// the next ones after a pause, then nothing: whichever server ends up
// reading the connection, it must be closed ReadHeaderTimeout after it was
// accepted. The grpc engine's router used to hand a connection it had
// waited on to a server that waited ReadHeaderTimeout again.
func TestHeaderTimeoutFromAccept(t *testing.T) {
	const timeout = 2 * time.Second
	const pause = 1500 * time.Millisecond
	srv := connAttackServer(t, goms.Config{ReadHeaderTimeout: timeout})
	cases := []struct {
		name        string
		first, then string
		listeners   []string
	}{
		// Part of the preface, then nothing.
		{"h2-partial-preface", http2.ClientPreface[:16], "", []string{"gateway", "grpc"}},
		// An HTTP/1.1 request whose first byte could start the preface.
		{"http1-headers-after-a-pause", "P", "OST /goms.v1.GoMsService/List HTTP/1.1\r\nHost: goms.test\r\n", []string{"gateway", "grpc"}},
		// The whole preface, late, and no SETTINGS: net/http's engine
		// waits IdleTimeout for frames after a preface, grpc-go
		// ReadHeaderTimeout.
		{"h2-preface-after-a-pause", http2.ClientPreface[:10], http2.ClientPreface[10:], []string{"grpc"}},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		for _, listener := range c.listeners {
			conn := dial(t, srv.Addr(listener))
			wg.Go(func() {
				name := listener + "/" + c.name
				start := time.Now()
				if _, err := io.WriteString(conn, c.first); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if c.then != "" {
					time.Sleep(pause)
					_, _ = io.WriteString(conn, c.then)
				}
				took, err := awaitClose(conn, start, 2*timeout, false)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				t.Logf("%s: closed %v after the connection opened (read_header_timeout %v)", name, took.Round(10*time.Millisecond), timeout)
				// Timers fire late on a loaded machine; a restarted clock
				// would close it at pause+timeout.
				if took < timeout-100*time.Millisecond || took > timeout+800*time.Millisecond {
					t.Errorf("%s: closed after %v, want %v", name, took, timeout)
				}
			})
		}
	}
	wg.Wait()
}

// TestHeaderBlockBound sends a header block that never ends: HEADERS
// without END_HEADERS, then 16 KiB CONTINUATION frames holding only HPACK
// table size updates, which decode to no header field and so never reach
// the header size limit of net/http or grpc-go. Each engine must close
// the connection once the block outgrows MaxHeaderBytes (the default,
// 1 MiB) and a frame, whether it is the connection's first request (read
// by the grpc engine's router) or a later one (read by net/http or
// grpc-go).
func TestHeaderBlockBound(t *testing.T) {
	pki := newTestPKI(t)
	srv := connAttackServer(t, goms.Config{Listeners: []goms.Listener{
		{Name: "gateway"},
		{Name: "grpc", Mode: goms.ModeGRPC},
		{Name: "gateway-tls", CertFile: pki.certFile, KeyFile: pki.keyFile},
		{Name: "grpc-tls", Mode: goms.ModeGRPC, CertFile: pki.certFile, KeyFile: pki.keyFile},
	}})
	healthCheck := newH2Frames().preface().
		headers(1, "POST", "/grpc.health.v1.Health/Check", "application/grpc", false, true).
		data(1, envelope(0, nil), true).bytes()
	const frame = 16 << 10
	// What the client may have written when the server closes: the bound,
	// and what the sockets of both ends buffer.
	const most = 1<<20 + frame + 12<<20
	const flood = 64 << 20
	cases := []struct {
		name      string
		afterCall bool
	}{{"first-request", false}, {"after-a-call", true}}
	for _, listener := range []string{"gateway", "grpc", "gateway-tls", "grpc-tls"} {
		for _, c := range cases {
			t.Run(listener+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				conn := dial(t, srv.Addr(listener))
				if strings.HasSuffix(listener, "-tls") {
					tc := tls.Client(conn, &tls.Config{RootCAs: pki.roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
					if err := tc.HandshakeContext(t.Context()); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
						t.Fatalf("TLS handshake: %v, ALPN %q", err, tc.ConnectionState().NegotiatedProtocol)
					}
					conn = tc
				}
				id := uint32(1)
				if c.afterCall {
					if _, err := conn.Write(healthCheck); err != nil {
						t.Fatal(err)
					}
					_ = conn.SetReadDeadline(time.Now().Add(callTimeout))
					if code, err := readGRPCStatus(responseFramer(conn), 1); err != nil || code != "0" {
						t.Fatalf("health check: grpc-status %q, %v", code, err)
					}
					id = 3
				} else if _, err := conn.Write(newH2Frames().preface().bytes()); err != nil {
					t.Fatal(err)
				}
				closed := make(chan struct{})
				go func() {
					_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
					_, _ = io.Copy(io.Discard, conn)
					close(closed)
				}()
				start := time.Now()
				f := newH2Frames()
				_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: tableSizeUpdates(frame)})
				head := bytes.Clone(f.bytes())
				f.buf.Reset()
				_ = f.fr.WriteContinuation(id, false, tableSizeUpdates(frame))
				cont := f.bytes()
				written := 0
				_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
				n, err := conn.Write(head)
				for written += n; err == nil && written < flood; written += n {
					n, err = conn.Write(cont)
				}
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatalf("still open after a %d MiB header block (%v)", written>>20, err)
				}
				t.Logf("closed after the client wrote %d KiB of one header block, in %v", written>>10, time.Since(start).Round(time.Millisecond))
				if written > most {
					t.Errorf("the client wrote %d KiB of one header block before the close, want at most %d KiB", written>>10, most>>10)
				}
			})
		}
	}
}

// TestPlainHTTPToTLSListener checks that goms, which does the TLS of its
// listeners itself, answers plain HTTP on a TLS listener as net/http
// does, on both engines, and still serves TLS callers.
func TestPlainHTTPToTLSListener(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := connAttackServer(t, goms.Config{Listeners: []goms.Listener{
		{Name: "gateway", CertFile: pki.certFile, KeyFile: pki.keyFile},
		{Name: "grpc", Mode: goms.ModeGRPC, CertFile: pki.certFile, KeyFile: pki.keyFile},
	}})
	for _, listener := range []string{"gateway", "grpc"} {
		conn := dial(t, srv.Addr(listener))
		_ = conn.SetDeadline(time.Now().Add(callTimeout))
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: goms.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(answer), "HTTP/1.0 400 Bad Request") {
			t.Errorf("%s: plain HTTP on a TLS listener: %q, want a 400", listener, answer)
		}
		res, err := pki.httpsClient(t, true).Get("https://" + srv.Addr(listener) + "/healthz")
		if err != nil {
			t.Fatalf("%s: GET /healthz over TLS: %v", listener, err)
		}
		res.Body.Close()
		if listener == "gateway" && res.StatusCode != http.StatusOK {
			t.Errorf("%s: GET /healthz over TLS: %s", listener, res.Status)
		}
	}
}
