package goms_test

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

func TestAccessLog(t *testing.T) {
	t.Parallel()
	logs, logger := newICLog()
	info := slog.LevelInfo
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, Logger: logger, Log: goms.Log{AccessLevel: &info}}, nil)
	generated := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, p := range icProtocols {
		t.Run(p.name, func(t *testing.T) {
			client := p.gomsClient(t, run.URL("gateway"))

			// A caller's request id is kept, returned and logged.
			callerID := "req-" + p.name
			req := connect.NewRequest(&gomsv1.CreateRequest{Name: "logged-" + p.name})
			req.Header().Set(goms.RequestIDHeader, callerID)
			res, err := client.Create(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Header().Get(goms.RequestIDHeader); got != callerID {
				t.Errorf("response %s %q, want %q", goms.RequestIDHeader, got, callerID)
			}
			recs := logs.find("goms: call", map[string]string{"request_id": callerID})
			if len(recs) != 1 {
				t.Fatalf("%d records with request_id %q, want 1", len(recs), callerID)
			}
			r := recs[0]
			want := map[string]string{
				"level":             "INFO",
				"procedure":         gomsv1connect.GoMsServiceCreateProcedure,
				"protocol":          p.name,
				"code":              "ok",
				"request_messages":  "1",
				"response_messages": "1",
			}
			for k, v := range want {
				if got := r[k].String(); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got, want := r["request_bytes"].Int64(), int64(proto.Size(req.Msg)); got != want {
				t.Errorf("request_bytes = %d, want %d", got, want)
			}
			if got, want := r["response_bytes"].Int64(), int64(proto.Size(res.Msg)); got != want {
				t.Errorf("response_bytes = %d, want %d", got, want)
			}
			if d := r["duration"].Duration(); d <= 0 || d > time.Minute {
				t.Errorf("duration = %v", d)
			}
			if r["peer"].String() == "" {
				t.Error("no peer")
			}
			if _, ok := r["error"]; ok {
				t.Errorf("error attribute on a successful call: %v", r["error"])
			}

			// Without one, goms makes an id and returns it, on errors too.
			_, err = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
			gomstest.WantError(t, err, connect.CodeNotFound)
			id := err.(*connect.Error).Meta().Get(goms.RequestIDHeader)
			if !generated.MatchString(id) {
				t.Fatalf("generated request id %q, want 16 hex digits", id)
			}
			recs = logs.find("goms: call", map[string]string{"request_id": id, "code": "not_found", "protocol": p.name})
			if len(recs) != 1 {
				t.Fatalf("%d records with the generated id %q, want 1", len(recs), id)
			}
			if recs[0]["error"].String() == "" {
				t.Error("no error attribute on a failed call")
			}
		})
	}

	t.Run("health is not logged", func(t *testing.T) {
		health := connect.NewClient[grpc_health_v1.HealthCheckRequest, grpc_health_v1.HealthCheckResponse](
			gomstest.H2C(t), run.URL("gateway")+"/grpc.health.v1.Health/Check", connect.WithGRPC())
		if _, err := health.CallUnary(t.Context(), connect.NewRequest(&grpc_health_v1.HealthCheckRequest{})); err != nil {
			t.Fatal(err)
		}
		if recs := logs.find("goms: call", map[string]string{"procedure": "/grpc.health.v1.Health/Check"}); len(recs) != 0 {
			t.Errorf("health check logged: %v", recs)
		}
	})
}

// TestAccessLogLevel checks that access log records are debug unless
// configured, so that a logger at info writes none, while the request id is
// still returned.
func TestAccessLogLevel(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, Logger: logger}, nil)
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"))
	res, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "quiet"}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Header().Get(goms.RequestIDHeader) == "" {
		t.Errorf("no %s in the response", goms.RequestIDHeader)
	}
	if strings.Contains(buf.String(), "goms: call") {
		t.Errorf("access log record written at the default level to a logger at info:\n%s", buf.String())
	}
}

// TestRequestIDWithoutAccessLog checks that the request id is a step of
// its own: with the access log removed by a rule, every call, unary or
// streaming, in every protocol, still keeps the caller's id or gets one,
// and returns it.
func TestRequestIDWithoutAccessLog(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName: {Remove: []string{"accesslog"}},
		}},
	}, nil)
	generated := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, p := range icProtocols {
		t.Run(p.name, func(t *testing.T) {
			client := p.gomsClient(t, run.URL("gateway"))
			req := connect.NewRequest(&gomsv1.CreateRequest{Name: "no-log-" + p.name})
			req.Header().Set(goms.RequestIDHeader, "caller-"+p.name)
			res, err := client.Create(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Header().Get(goms.RequestIDHeader); got != "caller-"+p.name {
				t.Errorf("unary: response %s %q, want the caller's", goms.RequestIDHeader, got)
			}
			_, err = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0000000000000000"}))
			var ce *connect.Error
			if !errors.As(err, &ce) || !generated.MatchString(ce.Meta().Get(goms.RequestIDHeader)) {
				t.Errorf("failed unary call: %v, %s %q; want a generated id", err, goms.RequestIDHeader, ce.Meta().Get(goms.RequestIDHeader))
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stream, err := client.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "watched-" + p.name})); err != nil {
				t.Fatal(err)
			}
			if !stream.Receive() {
				t.Fatalf("stream: %v", stream.Err())
			}
			if got := stream.ResponseHeader().Get(goms.RequestIDHeader); !generated.MatchString(got) {
				t.Errorf("stream: response %s %q, want a generated id", goms.RequestIDHeader, got)
			}
			cancel()
			_ = stream.Close()
		})
	}
}
