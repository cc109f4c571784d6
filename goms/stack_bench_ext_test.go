package goms_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/goms/tracing"
	"github.com/reversTeam/go-ms/goms/validate"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// BenchmarkDefaultStack measures the server-side cost of goms's
// interceptors: one Connect unary call (Get, binary protobuf) served by
// calling the handler's ServeHTTP directly, with no network and no
// client, so that ns/op and allocs/op are the handler's alone. Compare
// each case with bare-connect, a handler built without options.
func BenchmarkDefaultStack(b *testing.B) {
	svc := testservice.NewGoMs()
	created, err := svc.Create(b.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "bench"}))
	if err != nil {
		b.Fatal(err)
	}
	body, err := proto.Marshal(&gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()})
	if err != nil {
		b.Fatal(err)
	}
	discard := slog.New(slog.DiscardHandler)
	jsonLog := slog.New(slog.NewJSONHandler(io.Discard, nil))
	withServer := func(cfg goms.Config) func(b *testing.B) http.Handler {
		return func(b *testing.B) http.Handler {
			cfg.Listeners = []goms.Listener{{Name: "bench", Addr: "127.0.0.1:0"}}
			srv, err := goms.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = srv.Close() })
			_, h := gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...)
			return h
		}
	}
	metrics := func(b *testing.B) goms.Plugin {
		m, err := prom.New()
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	// Tracing on, sampling off: spans are started but not recorded.
	tracer := func(b *testing.B) goms.Plugin {
		t, err := tracing.New(b.Context(), tracing.Config{},
			tracing.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))))
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	// Tracing on as the observed stack of make bench runs it: sampling
	// off in goms/tracing's own provider, which skips the span of calls
	// without trace context.
	never := 0.0
	ratio0 := func(b *testing.B) goms.Plugin {
		t, err := tracing.New(b.Context(), tracing.Config{Enabled: true, SampleRatio: &never, Endpoint: "127.0.0.1:4318", Insecure: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = t.Shutdown(context.Background()) })
		return t
	}
	accessFile := func(b *testing.B) goms.Log {
		return goms.Log{AccessFile: filepath.Join(b.TempDir(), "access.log")}
	}
	observed := func(b *testing.B, extra ...goms.Plugin) []goms.Plugin {
		return append([]goms.Plugin{metrics(b), tracer(b)}, extra...)
	}
	cases := []struct {
		name    string
		handler func(b *testing.B) http.Handler
	}{
		{"bare-connect", func(*testing.B) http.Handler {
			_, h := gomsv1connect.NewGoMsServiceHandler(svc)
			return h
		}},
		// recovery + access log, the logger discarding (Enabled is false).
		{"default-discard-log", withServer(goms.Config{Logger: discard})},
		// recovery + access log written as JSON (to io.Discard).
		{"default-json-log", withServer(goms.Config{Logger: jsonLog})},
		// Each plugin alone, with the JSON access log and recovery.
		{"metrics-log", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: jsonLog, Plugins: []goms.Plugin{metrics(b)}})(b)
		}},
		{"tracing-log", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: jsonLog, Plugins: []goms.Plugin{tracer(b)}})(b)
		}},
		// metrics + tracing (not sampled) + JSON access log + recovery.
		{"metrics-tracing-log", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: jsonLog, Plugins: observed(b)})(b)
		}},
		// The access log in a file (Log.AccessFile), alone and with
		// metrics and tracing at sample ratio 0: the observed stack.
		{"default-access-file", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: discard, Log: accessFile(b)})(b)
		}},
		{"tracing-ratio0", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: discard, Plugins: []goms.Plugin{ratio0(b)}})(b)
		}},
		{"metrics-ratio0-file", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: discard, Log: accessFile(b), Plugins: []goms.Plugin{metrics(b), ratio0(b)}})(b)
		}},
		// the same and protovalidate.
		{"metrics-tracing-log-validate", func(b *testing.B) http.Handler {
			return withServer(goms.Config{Logger: jsonLog, Plugins: observed(b, validate.New())})(b)
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.handler(b)
			call := newBenchCall(b, body)
			call.serve(h) // the first call builds the per-procedure chain
			if call.w.status != http.StatusOK || call.w.n == 0 {
				b.Fatalf("status %d, %d bytes", call.w.status, call.w.n)
			}
			b.ReportAllocs()
			for b.Loop() {
				call.serve(h)
			}
		})
	}
}

// benchCall is one request, replayed: the same *http.Request with its
// body rewound, and a ResponseWriter that keeps nothing but counts.
type benchCall struct {
	req  *http.Request
	body *rewinder
	w    *benchWriter
}

type rewinder struct {
	*bytes.Reader
	data []byte
}

func (r *rewinder) Close() error { return nil }

func newBenchCall(b *testing.B, body []byte) *benchCall {
	rw := &rewinder{Reader: bytes.NewReader(body), data: body}
	req, err := http.NewRequest(http.MethodPost, "http://bench"+gomsv1connect.GoMsServiceGetProcedure, rw)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.RemoteAddr = "127.0.0.1:40000"
	req.ContentLength = int64(len(body))
	return &benchCall{req: req, body: rw, w: &benchWriter{h: make(http.Header)}}
}

func (c *benchCall) serve(h http.Handler) {
	c.body.Reset(c.body.data)
	clear(c.w.h)
	c.w.status, c.w.n = 0, 0
	h.ServeHTTP(c.w, c.req)
}

type benchWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.h }

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *benchWriter) WriteHeader(status int) { w.status = status }
