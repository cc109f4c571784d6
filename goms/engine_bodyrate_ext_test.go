package goms_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// TestMinBodyRate sends request bodies that stop, on a listener whose
// body rate grace is short: each call must be answered in its protocol
// with deadline_exceeded, or resource_exhausted for a message over the
// size limit that was being skipped, about the grace period after its
// body started, and an HTTP/1.1 connection closed after the answer.
// Bodies slow but above the rate, and streams idle between whole
// messages for several grace periods, must be served.
func TestMinBodyRate(t *testing.T) {
	const grace = 500 * time.Millisecond
	srv := connAttackServer(t, goms.Config{Listeners: []goms.Listener{
		{Name: "gateway", MinBodyRateGrace: grace},
		{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP, MinBodyRateGrace: grace},
		{Name: "grpcgo", Mode: goms.ModeGRPC, MinBodyRateGrace: grace},
		{Name: "default"},
	}})
	// A stalled HTTP/1.1 body, sent by hand so that the close shows.
	http1 := []struct {
		name        string
		listener    string
		contentType string
		length      string
		body        []byte
		want        string
		limit       time.Duration
	}{
		{"connect-unary-4GiB-length", "gateway", "application/json", "4294967296", nil, "deadline_exceeded", grace},
		{"connect-unary-half-body", "gateway", "application/json", "64", []byte(`{"pageSize":`), "deadline_exceeded", grace},
		{"grpc-web-4GiB-envelope", "gateway", "application/grpc-web+proto", "", []byte{0, 0xff, 0xff, 0xff, 0xff}, "resource_exhausted", grace},
		{"grpc-web-stalled-message", "gateway", "application/grpc-web+proto", "", append([]byte{0, 0, 0, 0x10, 0}, "partial"...), "deadline_exceeded", grace},
		{"connect-stream-stalled-message", "gateway", "application/connect+proto", "", append([]byte{0, 0, 0, 0x10, 0}, "partial"...), "deadline_exceeded", grace},
		// The default: 240 bytes/s after 5s.
		{"default-connect-unary-4GiB-length", "default", "application/json", "4294967296", nil, "deadline_exceeded", 5 * time.Second},
	}
	for _, c := range http1 {
		t.Run("http1/"+c.name, func(t *testing.T) {
			t.Parallel()
			conn := dial(t, srv.Addr(c.listener))
			procedure := gomsv1connect.GoMsServiceListProcedure
			if c.contentType == "application/connect+proto" {
				procedure = gomsv1connect.GoMsServiceCreateManyProcedure
			}
			head := "POST " + procedure + " HTTP/1.1\r\nHost: goms.test\r\nContent-Type: " + c.contentType + "\r\n"
			if c.length != "" {
				head += "Content-Length: " + c.length + "\r\n"
			} else {
				head += "Transfer-Encoding: chunked\r\n"
			}
			body := c.body
			if c.length == "" {
				body = fmt.Appendf(nil, "%x\r\n%s\r\n", len(c.body), c.body)
			}
			start := time.Now()
			if _, err := conn.Write(append([]byte(head+"\r\n"), body...)); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(start.Add(c.limit + 5*time.Second))
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			data, err := io.ReadAll(res.Body)
			res.Body.Close()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if code := answerCode(res, data); code != c.want {
				t.Errorf("answer %q (HTTP %d), want %q", code, res.StatusCode, c.want)
			}
			if took < c.limit-100*time.Millisecond || took > c.limit+2*time.Second {
				t.Errorf("answered after %v, want about %v", took, c.limit)
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				t.Errorf("the connection is still open after the answer: %v", err)
			}
			t.Logf("answered %s after %v, then closed", c.want, took.Round(10*time.Millisecond))
		})
	}

	// gRPC over h2c with a stalled message: the stream is answered and
	// reset; the connection goes on serving.
	t.Run("h2c/grpc-stalled-message", func(t *testing.T) {
		t.Parallel()
		for _, listener := range []string{"gateway", "grpc"} {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write(append([]byte{0, 0, 0, 0x10, 0}, "partial"...)) }()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL(listener)+gomsv1connect.GoMsServiceListProcedure, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			client := gomstest.H2C(t)
			start := time.Now()
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", listener, err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			took := time.Since(start)
			if code := answerCode(res, data); code != "deadline_exceeded" {
				t.Errorf("%s: answer %q, want deadline_exceeded", listener, code)
			}
			if took < grace-100*time.Millisecond || took > grace+2*time.Second {
				t.Errorf("%s: answered after %v, want about %v", listener, took, grace)
			}
			t.Logf("%s: answered deadline_exceeded after %v", listener, took.Round(10*time.Millisecond))
		}
	})

	// On the grpc engine too a stalled message is answered, and then the
	// connection is closed. A bidi stream idle on the same connection
	// (stream 1) is not the one cut.
	t.Run("grpc-engine/stalled-message", func(t *testing.T) {
		t.Parallel()
		conn := dial(t, srv.Addr("grpcgo"))
		lookup, err := proto.Marshal(&gomsv1.LookupRequest{Id: "missing"})
		if err != nil {
			t.Fatal(err)
		}
		f := newH2Frames().preface().
			headers(1, "POST", gomsv1connect.GoMsServiceLookupProcedure, "application/grpc", false, true).
			data(1, envelope(0, lookup), false)
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(callTimeout))
		fr := responseFramer(conn)
		if err := readMessage(fr, 1); err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		f.buf.Reset()
		f.headers(3, "POST", gomsv1connect.GoMsServiceListProcedure, "application/grpc", false, true).
			data(3, append([]byte{0, 0, 0, 0x10, 0}, "partial"...), false)
		start := time.Now()
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		id, code, err := readStatus(fr)
		took := time.Since(start)
		if err != nil || id != 3 || code != "4" {
			t.Fatalf("stream %d ended with grpc-status %q, %v; want stream 3 with 4 (deadline_exceeded)", id, code, err)
		}
		if took < grace-100*time.Millisecond || took > grace+2*time.Second {
			t.Errorf("answered after %v, want about %v", took, grace)
		}
		closed, err := awaitClose(conn, start, grace+5*time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("answered deadline_exceeded after %v, closed after %v", took.Round(10*time.Millisecond), closed.Round(10*time.Millisecond))
	})

	// A message the server refused before it was whole is not slow: the
	// connection goes on serving after the grace period.
	t.Run("grpc-engine/refused-message", func(t *testing.T) {
		t.Parallel()
		conn := dial(t, srv.Addr("grpcgo"))
		_ = conn.SetDeadline(time.Now().Add(callTimeout))
		f := newH2Frames().preface().
			headers(1, "POST", gomsv1connect.GoMsServiceListProcedure, "application/grpc", false, true).
			data(1, append([]byte{0, 0, 0x50, 0, 0}, "partial"...), false)
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		fr := responseFramer(conn)
		if code, err := readGRPCStatus(fr, 1); err != nil || code != "8" {
			t.Fatalf("a 5 MiB message: grpc-status %q, %v; want 8 (resource_exhausted)", code, err)
		}
		time.Sleep(grace + 500*time.Millisecond)
		checkHealthOn(t, conn, f, fr, 3)
	})

	// Data a client sends on a stream the server has already answered
	// (here, a call of a method that does not exist, answered at once)
	// is not a message the server waits for: a partial one must not get
	// the connection closed after the grace period, with the calls on it.
	t.Run("grpc-engine/data-after-answer", func(t *testing.T) {
		t.Parallel()
		conn := dial(t, srv.Addr("grpcgo"))
		_ = conn.SetDeadline(time.Now().Add(callTimeout))
		f := newH2Frames().preface().
			headers(1, "POST", "/goms.v1.GoMsService/Missing", "application/grpc", false, true)
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		fr := responseFramer(conn)
		if code, err := readGRPCStatus(fr, 1); err != nil || code != "12" {
			t.Fatalf("an unknown method: grpc-status %q, %v; want 12 (unimplemented)", code, err)
		}
		f.buf.Reset()
		f.data(1, append([]byte{0, 0, 0, 0x10, 0}, "partial"...), false)
		if _, err := conn.Write(f.bytes()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(grace + 500*time.Millisecond)
		checkHealthOn(t, conn, f, fr, 3)
	})

	// A body slow but above the rate: 64 bytes every 100ms for three
	// grace periods.
	t.Run("http1/connect-unary-slow-body", func(t *testing.T) {
		t.Parallel()
		body := []byte(`{"pageSize": 1}` + strings.Repeat(" ", 1000))
		pr, pw := io.Pipe()
		go func() {
			defer pw.Close()
			for b := body; len(b) > 0; b = b[min(64, len(b)):] {
				if _, err := pw.Write(b[:min(64, len(b))]); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL("gateway")+gomsv1connect.GoMsServiceListProcedure, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		res, err := gomstest.HTTP1(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if code := answerCode(res, data); code != "ok" {
			t.Errorf("a body at 640 bytes/s: %q, want ok", code)
		}
	})

	// Streams idle between whole messages for three grace periods, on
	// both listeners and over HTTP/2 and HTTP/1.1 where the protocol
	// allows it.
	t.Run("idle-streams", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 3*callTimeout)
		defer cancel()
		for k, c := range []struct {
			listener string
			opts     []connect.ClientOption
		}{
			{"gateway", nil},
			{"gateway", []connect.ClientOption{connect.WithGRPC()}},
			{"grpc", []connect.ClientOption{connect.WithGRPC()}},
			{"grpcgo", []connect.ClientOption{connect.WithGRPC()}},
		} {
			client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL(c.listener), c.opts...)
			bidi := client.Lookup(ctx)
			for i := range 2 {
				if i > 0 {
					time.Sleep(3 * grace)
				}
				if err := bidi.Send(&gomsv1.LookupRequest{Id: "missing"}); err != nil {
					t.Fatalf("%s: Lookup send %d: %v", c.listener, i, err)
				}
				if _, err := bidi.Receive(); err != nil {
					t.Fatalf("%s: Lookup receive %d after an idle stream: %v", c.listener, i, err)
				}
			}
			_ = bidi.CloseRequest()
			_ = bidi.CloseResponse()

			many := client.CreateMany(ctx)
			for i := range 2 {
				if i > 0 {
					time.Sleep(3 * grace)
				}
				if err := many.Send(&gomsv1.CreateManyRequest{Name: fmt.Sprintf("idle-%d-%d", k, i)}); err != nil {
					t.Fatalf("%s: CreateMany send %d: %v", c.listener, i, err)
				}
			}
			res, err := many.CloseAndReceive()
			if err != nil || len(res.Msg.GetItems()) != 2 {
				t.Fatalf("%s: CreateMany after an idle stream: %v, %v", c.listener, res, err)
			}
		}
	})
}

// checkHealthOn makes a health check on stream id of conn, which must
// still be open, and fails the test unless it is answered SERVING.
func checkHealthOn(t *testing.T, conn net.Conn, f *h2Frames, fr *http2.Framer, id uint32) {
	t.Helper()
	f.buf.Reset()
	f.headers(id, "POST", "/grpc.health.v1.Health/Check", "application/grpc", false, true).data(id, envelope(0, nil), true)
	if _, err := conn.Write(f.bytes()); err != nil {
		t.Fatalf("the connection was closed: %v", err)
	}
	if code, err := readGRPCStatus(fr, id); err != nil || code != "0" {
		t.Fatalf("a health check after the grace period: grpc-status %q, %v", code, err)
	}
}

// readMessage reads frames until a DATA frame of stream id.
func readMessage(fr *http2.Framer, id uint32) error {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == id && len(d.Data()) > 0 {
			return nil
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id && h.StreamEnded() {
			return fmt.Errorf("stream %d ended", id)
		}
	}
}

// readStatus reads frames until a stream ends and returns it and its
// grpc-status.
func readStatus(fr *http2.Framer) (uint32, string, error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, "", err
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamEnded() {
			for _, hf := range h.Fields {
				if hf.Name == "grpc-status" {
					return h.StreamID, hf.Value, nil
				}
			}
			return h.StreamID, "", nil
		}
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			return r.StreamID, "", fmt.Errorf("stream %d reset: %v", r.StreamID, r.ErrCode)
		}
	}
}
