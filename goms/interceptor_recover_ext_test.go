package goms_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// panicText is what the panicking handler panics with; no client may see it.
const panicText = "secret-panic-value-4242"

// panickyService panics in Get when asked for the id "panic", and answers
// other ids with an item of that id.
type panickyService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func (panickyService) Get(_ context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if req.Msg.GetId() == "panic" {
		panic(panicText)
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

func (panickyService) Watch(context.Context, *connect.Request[gomsv1.WatchRequest], *connect.ServerStream[gomsv1.WatchResponse]) error {
	panic(panicText)
}

func TestRecovery(t *testing.T) {
	t.Parallel()
	logs, logger := newICLog()
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, Logger: logger}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(panickyService{}, srv.HandlerOptions()...))
	})
	for _, p := range icProtocols {
		t.Run(p.name, func(t *testing.T) {
			client := p.gomsClient(t, run.URL("gateway"))
			_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "panic"}))
			wantPanicError(t, err)

			stream, err := client.Watch(t.Context(), connect.NewRequest(&gomsv1.WatchRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			for stream.Receive() {
				t.Fatal("Watch sent a message")
			}
			wantPanicError(t, stream.Err())
			_ = stream.Close()

			// The server goes on serving.
			res, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "after-" + p.name}))
			if err != nil {
				t.Fatalf("call after the panic: %v", err)
			}
			if got := res.Msg.GetItem().GetId(); got != "after-"+p.name {
				t.Errorf("got item %q", got)
			}
		})
	}
	for _, proc := range []string{gomsv1connect.GoMsServiceGetProcedure, gomsv1connect.GoMsServiceWatchProcedure} {
		recs := logs.find("goms: handler panicked", map[string]string{"procedure": proc})
		if len(recs) != len(icProtocols) {
			t.Fatalf("%s: %d panic records, want %d", proc, len(recs), len(icProtocols))
		}
		for _, r := range recs {
			if r["level"].String() != "ERROR" {
				t.Errorf("panic logged at %s, want ERROR", r["level"])
			}
			if got := r["panic"].String(); got != panicText {
				t.Errorf("panic attribute %q, want %q", got, panicText)
			}
			stack := r["stack"].String()
			if !strings.Contains(stack, "goroutine ") || !strings.Contains(stack, "panickyService") {
				t.Errorf("stack attribute does not name the panicking function:\n%s", stack)
			}
		}
	}
	// The access log records the calls as internal.
	if recs := logs.find("goms: call", map[string]string{"procedure": gomsv1connect.GoMsServiceGetProcedure, "code": "internal"}); len(recs) != len(icProtocols) {
		t.Errorf("%d access log records with code internal, want %d", len(recs), len(icProtocols))
	}
}

// wantPanicError fails the test unless err is the generic internal error
// of a recovered panic, with nothing of the panic in it.
func wantPanicError(t *testing.T, err error) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a connect error", err)
	}
	if ce.Code() != connect.CodeInternal {
		t.Errorf("code %v, want internal", ce.Code())
	}
	if ce.Message() != goms.ErrPanic.Error() {
		t.Errorf("message %q, want %q", ce.Message(), goms.ErrPanic.Error())
	}
	if len(ce.Details()) != 0 {
		t.Errorf("%d error details, want none", len(ce.Details()))
	}
	leaks := ce.Error()
	for k, v := range ce.Meta() {
		leaks += k + strings.Join(v, "")
	}
	if strings.Contains(leaks, panicText) || strings.Contains(leaks, "goroutine") || strings.Contains(leaks, ".go:") {
		t.Errorf("the error leaks the panic: %q", leaks)
	}
}
