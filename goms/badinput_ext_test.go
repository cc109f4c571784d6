package goms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// badInputServer is a server with a 1 KiB message limit and 4 KiB header
// limit, and a check that it still serves normal calls on every listener.
type badInputServer struct {
	*gomstest.Running
	calls atomic.Int64
}

func startBadInputServer(t *testing.T) *badInputServer {
	t.Helper()
	return &badInputServer{Running: gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{
			{Name: "gateway"},
			{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP},
			{Name: "grpcgo", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC},
		},
		MaxMessageBytes: 1 << 10,
		MaxHeaderBytes:  4 << 10,
	}, nil)}
}

// stillServes makes a normal Create and Get on every listener, with a new
// connection each.
func (s *badInputServer) stillServes(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		listener string
		opts     []connect.ClientOption
	}{
		{"gateway", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcgo", []connect.ClientOption{connect.WithGRPC()}},
	} {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), s.URL(c.listener), c.opts...)
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		name := fmt.Sprintf("normal %d", s.calls.Add(1))
		res, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
		if err != nil {
			cancel()
			t.Fatalf("%s: normal Create after the bad input: %v", c.listener, err)
		}
		_, err = client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: res.Msg.GetItem().GetId()}))
		cancel()
		if err != nil {
			t.Fatalf("%s: normal Get after the bad input: %v", c.listener, err)
		}
	}
}

// post sends body to a procedure with the given Content-Type over HTTP/1.1
// and returns the response and its body.
func post(t *testing.T, url, contentType string, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := gomstest.HTTP1(t).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(data)
}

// TestBadRequests sends malformed requests to a live server: each gets an
// error in its caller's protocol, and the server then serves normal calls.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	srv := startBadInputServer(t)
	create := gomsv1connect.GoMsServiceCreateProcedure

	t.Run("malformed-json", func(t *testing.T) {
		t.Parallel()
		res, body := post(t, srv.URL("gateway")+create, "application/json", []byte(`{"name":`))
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":"invalid_argument"`) {
			t.Errorf("got %d %q, want 400 and invalid_argument", res.StatusCode, body)
		}
		srv.stillServes(t)
	})
	t.Run("malformed-proto", func(t *testing.T) {
		t.Parallel()
		res, body := post(t, srv.URL("gateway")+create, "application/proto", []byte{0xff, 0xff, 0xff})
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":"invalid_argument"`) {
			t.Errorf("got %d %q, want 400 and invalid_argument", res.StatusCode, body)
		}
		srv.stillServes(t)
	})
	t.Run("text-plain/gateway", func(t *testing.T) {
		t.Parallel()
		res, body := post(t, srv.URL("gateway")+create, "text/plain", []byte("hello"))
		if res.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("got %d %q, want 415 from connect", res.StatusCode, body)
		}
		srv.stillServes(t)
	})
	for _, listener := range []string{"grpc", "grpcgo"} {
		t.Run("text-plain/"+listener, func(t *testing.T) {
			t.Parallel()
			res, body := post(t, srv.URL(listener)+create, "text/plain", []byte("hello"))
			if res.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(res.Header.Get("Accept-Post"), "application/grpc") {
				t.Errorf("got %d %q, Accept-Post %q; want 415 naming application/grpc", res.StatusCode, body, res.Header.Get("Accept-Post"))
			}
			srv.stillServes(t)
		})
	}
	for _, c := range []struct {
		name     string
		listener string
		opts     []connect.ClientOption
	}{
		{"connect", "gateway", nil},
		{"grpc", "grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-engine", "grpcgo", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", "gateway", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run("unknown-method/"+c.name, func(t *testing.T) {
			t.Parallel()
			client := connect.NewClient[gomsv1.GetRequest, gomsv1.GetResponse](gomstest.H2C(t), srv.URL(c.listener)+"/goms.v1.GoMsService/Nope", c.opts...)
			_, err := client.CallUnary(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: unknownID}))
			gomstest.WantError(t, err, connect.CodeUnimplemented, "unknown procedure /goms.v1.GoMsService/Nope")
			srv.stillServes(t)
		})
	}
	t.Run("truncated-grpc-message", func(t *testing.T) {
		t.Parallel()
		// The envelope announces 16 bytes and 3 follow.
		body := []byte("\x00\x00\x00\x00\x10abc")
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL("gateway")+create, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc")
		res, err := gomstest.H2C(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		status := res.Trailer.Get("Grpc-Status") + res.Header.Get("Grpc-Status")
		if status == "" || status == "0" {
			t.Errorf("grpc-status %q, want an error", status)
		}
		srv.stillServes(t)
	})
	t.Run("header-too-large", func(t *testing.T) {
		t.Parallel()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL("gateway")+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Big", strings.Repeat("x", 16<<10))
		res, err := gomstest.HTTP1(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("got %d, want 431", res.StatusCode)
		}
		srv.stillServes(t)
	})
}

// TestMessageTooLarge checks Config.MaxMessageBytes in every protocol, for
// plain and for compressed messages that grow past it once inflated.
func TestMessageTooLarge(t *testing.T) {
	t.Parallel()
	srv := startBadInputServer(t)
	large := strings.Repeat("x", 4<<10) // 4 KiB, over the 1 KiB limit
	bomb := strings.Repeat("a", 64<<10) // 64 KiB, gzips to a few hundred bytes
	small := strings.Repeat("s", 512)   // under the limit, but compressed all the same
	cases := []struct {
		name     string
		listener string
		opts     []connect.ClientOption
	}{
		{"connect-proto", "gateway", nil},
		{"connect-json", "gateway", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpcweb", "gateway", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc", "grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-engine", "grpcgo", []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL(c.listener), c.opts...)
			_, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: large}))
			gomstest.WantError(t, err, connect.CodeResourceExhausted)
			srv.stillServes(t)

			gzipped := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL(c.listener),
				append(c.opts, connect.WithSendGzip(), connect.WithCompressMinBytes(0))...)
			_, err = gzipped.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: bomb}))
			gomstest.WantError(t, err, connect.CodeResourceExhausted)
			srv.stillServes(t)

			res, err := gzipped.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: small + c.name}))
			if err != nil {
				t.Fatalf("gzipped Create under the limit: %v", err)
			}
			if res.Msg.GetItem().GetName() != small+c.name {
				t.Errorf("gzipped Create returned %d bytes of name", len(res.Msg.GetItem().GetName()))
			}
			// The stream messages are limited one by one, as unary ones.
			stream := client.CreateMany(t.Context())
			_ = stream.Send(&gomsv1.CreateManyRequest{Name: large})
			_, err = stream.CloseAndReceive()
			gomstest.WantError(t, err, connect.CodeResourceExhausted)
			srv.stillServes(t)
		})
	}
}

// TestGarbageConnections writes bytes that are no HTTP at all on raw
// connections: the server answers or closes each, and serves on.
func TestGarbageConnections(t *testing.T) {
	t.Parallel()
	srv := startBadInputServer(t)
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	rng := rand.New(rand.NewChaCha8([32]byte{'g', 'o', 'm', 's'}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
	}{
		// Up to 1 MiB + 16 KiB: more than the largest frame the server
		// reads, so that a random frame length cannot leave it waiting.
		{"h2c-preface-then-garbage", append([]byte(preface), random(1<<20+16<<10)...)},
		{"garbage", append(random(4<<10), "\r\n\r\n"...)},
		{"http1-garbage-request-line", []byte("\x00\x01\x02 / HTTP/1.1\r\nHost: x\r\n\r\n")},
	}
	for _, listener := range []string{"gateway", "grpc", "grpcgo"} {
		for _, c := range cases {
			t.Run(listener+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				conn, err := net.DialTimeout("tcp", srv.Addr(listener), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
					t.Fatal(err)
				}
				// Writes stop at the first error: the server may hang up
				// before reading everything.
				for data := c.data; len(data) > 0; {
					n := min(len(data), 16<<10)
					if _, err := conn.Write(data[:n]); err != nil {
						break
					}
					data = data[n:]
				}
				answer, err := io.ReadAll(conn)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the server kept the connection open 5s after the garbage (read %q)", first(answer))
				}
				t.Logf("answer %q, then %v", first(answer), err)
				srv.stillServes(t)
			})
		}
	}
}
