package tracing_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/tracing"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// span is a received span with the service that sent it.
type span struct {
	service string
	*tracepb.Span
}

// receiver collects the spans of OTLP export requests.
type receiver struct {
	mu    sync.Mutex
	spans []span
	coltracepb.UnimplementedTraceServiceServer
}

func (r *receiver) add(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, span{service, s})
			}
		}
	}
}

func (r *receiver) all() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// ServeHTTP is an OTLP/HTTP receiver: protobuf ExportTraceServiceRequest
// bodies, gzipped or not, on /v1/traces.
func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want protobuf on /v1/traces", http.StatusNotFound)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&export)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Export is the OTLP/gRPC receiver.
func (r *receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// startHTTPReceiver serves an OTLP/HTTP receiver on 127.0.0.1 and returns
// its traces URL.
func startHTTPReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	r := &receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r, "http://" + ln.Addr().String() + "/v1/traces"
}

// startGRPCReceiver serves an OTLP/gRPC receiver on 127.0.0.1 and returns
// its address.
func startGRPCReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	r := &receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r, ln.Addr().String()
}

type protocol struct {
	name string
	h2   bool
	opts []connect.ClientOption
}

var protocols = []protocol{
	{name: connect.ProtocolConnect},
	{name: connect.ProtocolGRPC, h2: true, opts: []connect.ClientOption{connect.WithGRPC()}},
	{name: connect.ProtocolGRPCWeb, opts: []connect.ClientOption{connect.WithGRPCWeb()}},
}

func (p protocol) client(tb testing.TB) *http.Client {
	if p.h2 {
		return gomstest.H2C(tb)
	}
	return gomstest.HTTP1(tb)
}

func newTracing(t *testing.T, cfg tracing.Config) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatalf("tracing is off with %+v", cfg)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

// TestTraceAcrossProcesses runs three goms "processes" in one: an edge
// client calls the child service, whose handler calls the goms service of
// another server. Each has its own tracer provider exporting over
// OTLP/HTTP; the spans must form one trace per call, in each protocol.
func TestTraceAcrossProcesses(t *testing.T) {
	recv, endpoint := startHTTPReceiver(t)
	cfg := func(service string) tracing.Config {
		return tracing.Config{Endpoint: endpoint, ServiceName: service}
	}
	edge := newTracing(t, cfg("edge"))
	childTracing := newTracing(t, cfg("child"))
	gomsTracing := newTracing(t, cfg("goms"))

	gomsRun := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Plugins:   []goms.Plugin{gomsTracing},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
	})
	parent, err := gomsv1connect.NewGoMsServiceClient(gomstest.HTTP1(t), gomsRun.URL("gateway")).
		Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "parent"}))
	if err != nil {
		t.Fatal(err)
	}
	parentID := parent.Msg.GetItem().GetId()

	for _, p := range protocols {
		childRun := gomstest.Start(t, goms.Config{
			Listeners: []goms.Listener{{Name: "gateway"}},
			Plugins:   []goms.Plugin{childTracing},
		}, func(srv *goms.Server) error {
			// A client of another process: the server's client options
			// carry the trace on.
			parents := gomsv1connect.NewGoMsServiceClient(p.client(t), gomsRun.URL("gateway"), append(srv.ClientOptions(), p.opts...)...)
			return srv.Mount(childv1connect.NewChildServiceHandler(testservice.NewChild(parents), srv.HandlerOptions()...))
		})
		client := childv1connect.NewChildServiceClient(p.client(t), childRun.URL("gateway"),
			append([]connect.ClientOption{connect.WithInterceptors(edge.ClientInterceptor())}, p.opts...)...)
		if _, err := client.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: parentID, Name: "child-" + p.name})); err != nil {
			t.Fatal(err)
		}
	}
	// Shutdown flushes the batches.
	for _, tr := range []*tracing.Tracing{edge, childTracing, gomsTracing} {
		if err := tr.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	spans := recv.all()
	var roots []span
	for _, s := range spans {
		if s.service == "edge" && s.GetName() == "child.v1.ChildService/Create" {
			roots = append(roots, s)
		}
	}
	if len(roots) != len(protocols) {
		t.Fatalf("%d edge spans, want %d; got %s", len(roots), len(protocols), describe(spans))
	}
	for _, root := range roots {
		if len(root.GetParentSpanId()) != 0 {
			t.Errorf("edge span has a parent")
		}
		if root.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("edge span kind %v", root.GetKind())
		}
		// The chain, each span the parent of the next.
		chain := []struct {
			service, name string
			kind          tracepb.Span_SpanKind
		}{
			{"child", "child.v1.ChildService/Create", tracepb.Span_SPAN_KIND_SERVER},
			{"child", "goms.v1.GoMsService/Get", tracepb.Span_SPAN_KIND_CLIENT},
			{"goms", "goms.v1.GoMsService/Get", tracepb.Span_SPAN_KIND_SERVER},
		}
		prev := root
		for _, link := range chain {
			var found []span
			for _, s := range spans {
				if s.service == link.service && s.GetName() == link.name && s.GetKind() == link.kind && bytes.Equal(s.GetParentSpanId(), prev.GetSpanId()) {
					found = append(found, s)
				}
			}
			if len(found) != 1 {
				t.Fatalf("trace %x: %d %s spans %q (%v) under %x, want 1; got %s",
					root.GetTraceId(), len(found), link.service, link.name, link.kind, prev.GetSpanId(), describe(spans))
			}
			if !bytes.Equal(found[0].GetTraceId(), root.GetTraceId()) {
				t.Errorf("%s span %q in trace %x, want %x", link.service, link.name, found[0].GetTraceId(), root.GetTraceId())
			}
			prev = found[0]
		}
	}
}

func describe(spans []span) string {
	var b bytes.Buffer
	for _, s := range spans {
		b.WriteString("\n  " + s.service + " " + s.GetName() + " " + s.GetKind().String() +
			" trace=" + hex.EncodeToString(s.GetTraceId()) + " span=" + hex.EncodeToString(s.GetSpanId()) +
			" parent=" + hex.EncodeToString(s.GetParentSpanId()))
	}
	return b.String()
}

// TestConfigFromEnvironment checks that the standard OTEL_* variables turn
// tracing on and choose the exporter, here OTLP/gRPC.
func TestConfigFromEnvironment(t *testing.T) {
	recv, addr := startGRPCReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	tr := newTracing(t, tracing.Config{})
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Plugins:   []goms.Plugin{tr},
	}, nil)
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
	if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
		t.Fatal(err)
	}
	// Health checks are left untraced.
	health := grpchealth.NewClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
	if _, err := health.Check(t.Context(), &grpchealth.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, s := range recv.all() {
		if s.service == "from-env" && s.GetName() == "goms.v1.GoMsService/List" && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER {
			found = true
		}
		if s.GetName() == "grpc.health.v1.Health/Check" {
			t.Errorf("health check traced")
		}
	}
	if !found {
		t.Errorf("no server span of service from-env; got %s", describe(recv.all()))
	}
}

func TestOffUnlessConfigured(t *testing.T) {
	for _, env := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(env, "")
	}
	tr, err := tracing.New(t.Context(), tracing.Config{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || tr.TracerProvider() != nil {
		t.Error("tracing is on without an endpoint")
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Error(err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if tr, err := tracing.New(t.Context(), tracing.Config{}); err != nil {
		t.Errorf("OTEL_SDK_DISABLED=true: %v", err)
	} else if tr.Enabled() {
		t.Error("OTEL_SDK_DISABLED=true: tracing is on")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ratio := 1.5
	for _, tc := range []struct {
		cfg  tracing.Config
		want string
	}{
		{tracing.Config{Endpoint: "127.0.0.1:4318", Protocol: "udp"}, `goms/tracing: protocol "udp"`},
		{tracing.Config{Endpoint: "127.0.0.1:4318", SampleRatio: &ratio}, "goms/tracing: sample_ratio: 1.5 is not between 0 and 1"},
	} {
		_, err := tracing.New(t.Context(), tc.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New(%+v): got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
