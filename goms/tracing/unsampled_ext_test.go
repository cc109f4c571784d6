package tracing_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/tracing"
)

// spanContextService answers Get with the trace id its context carries,
// and whether it is sampled, in the item's id and name.
type spanContextService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func (spanContextService) Get(ctx context.Context, _ *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	sc := trace.SpanContextFromContext(ctx)
	sampled := "unsampled"
	if sc.IsSampled() {
		sampled = "sampled"
	}
	if !sc.IsValid() {
		sampled = "none"
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: sc.TraceID().String(), Name: sampled}}), nil
}

// TestSampleRatioZero checks a server that never samples new traces: a
// call without trace context gets a new unsampled one (for its outgoing
// calls to carry) and no span, while a call in a sampled trace continues
// it and is recorded.
func TestSampleRatioZero(t *testing.T) {
	recv, endpoint := startHTTPReceiver(t)
	never := 0.0
	server := newTracing(t, tracing.Config{Endpoint: endpoint, ServiceName: "server", SampleRatio: &never})
	edge := newTracing(t, tracing.Config{Endpoint: endpoint, ServiceName: "edge"})
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Plugins:   []goms.Plugin{server},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(spanContextService{}, srv.HandlerOptions()...))
	})
	get := func(opts ...connect.ClientOption) *gomsv1.Item {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), append(opts, connect.WithGRPC())...)
		res, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetItem()
	}
	plain := get()
	if plain.GetName() != "unsampled" {
		t.Errorf("a call without trace context: the handler saw a %s span context; want a new unsampled one", plain.GetName())
	}
	traced := get(connect.WithInterceptors(edge.ClientInterceptor()))
	if traced.GetName() != "sampled" {
		t.Errorf("a call in a sampled trace: the handler saw a %s span context", traced.GetName())
	}
	for _, tr := range []*tracing.Tracing{edge, server} {
		if err := tr.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var serverSpans []span
	for _, s := range recv.all() {
		if s.service == "server" {
			serverSpans = append(serverSpans, s)
		}
	}
	if len(serverSpans) != 1 || trace.TraceID(serverSpans[0].GetTraceId()).String() != traced.GetId() {
		t.Errorf("server spans: %s; want one, in trace %s", describe(serverSpans), traced.GetId())
	}
}
