package prom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// panicky is the example GoMsService, but Get panics for the id "panic".
type panicky struct {
	*testservice.GoMs
}

func (p panicky) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if req.Msg.GetId() == "panic" {
		panic("boom")
	}
	return p.GoMs.Get(ctx, req)
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

func TestMetrics(t *testing.T) {
	t.Parallel()
	metrics, err := prom.New()
	if err != nil {
		t.Fatal(err)
	}
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
		Plugins:   []goms.Plugin{metrics},
	}, func(srv *goms.Server) error {
		// The child calls its parent through srv.Client with the client
		// side of the plugins, over gRPC.
		httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
		parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, append(srv.ClientOptions(), connect.WithGRPC())...)
		return errors.Join(
			srv.Mount(gomsv1connect.NewGoMsServiceHandler(panicky{testservice.NewGoMs()}, srv.HandlerOptions()...)),
			srv.Mount(childv1connect.NewChildServiceHandler(testservice.NewChild(parents), srv.HandlerOptions()...)),
		)
	})

	const creates, misses = 3, 2
	for _, p := range protocols {
		client := gomsv1connect.NewGoMsServiceClient(p.client(t), run.URL("gateway"), p.opts...)
		var id string
		for i := range creates {
			res, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: p.name + "-" + string(rune('a'+i))}))
			if err != nil {
				t.Fatal(err)
			}
			id = res.Msg.GetItem().GetId()
		}
		for range misses {
			_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
			gomstest.WantError(t, err, connect.CodeNotFound)
		}
		_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "panic"}))
		gomstest.WantError(t, err, connect.CodeInternal)
		if p.name == connect.ProtocolConnect {
			children := childv1connect.NewChildServiceClient(p.client(t), run.URL("gateway"), p.opts...)
			if _, err := children.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: id, Name: "child"})); err != nil {
				t.Fatal(err)
			}
		}
	}

	families := scrape(t, "http://"+run.Addr("admin")+prom.MetricsPath)
	for _, p := range protocols {
		labels := map[string]string{"service": "goms.v1.GoMsService", "protocol": p.name}
		with := func(kv ...string) map[string]string {
			m := map[string]string{}
			for k, v := range labels {
				m[k] = v
			}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			return m
		}
		wantValue(t, families, "goms_server_requests_total", with("method", "Create", "code", "ok"), creates)
		wantValue(t, families, "goms_server_requests_total", with("method", "Get", "code", "not_found"), misses)
		wantValue(t, families, "goms_server_requests_total", with("method", "Get", "code", "internal"), 1)
		wantValue(t, families, "goms_server_request_duration_seconds", with("method", "Create", "code", "ok"), creates)
		wantValue(t, families, "goms_server_request_duration_seconds", with("method", "Get", "code", "not_found"), misses)
		wantValue(t, families, "goms_server_in_flight_requests", with("method", "Create"), 0)
		wantValue(t, families, "goms_server_received_message_bytes", with("method", "Create"), creates)
		wantValue(t, families, "goms_server_sent_message_bytes", with("method", "Create"), creates)
		// Get succeeded only when the child called it, over gRPC.
		childGets := 0.0
		if p.name == connect.ProtocolGRPC {
			childGets = 1
		}
		wantValue(t, families, "goms_server_sent_message_bytes", with("method", "Get"), childGets)
		wantValue(t, families, "goms_server_received_message_bytes", with("method", "Get"), misses+1+childGets)
		wantValue(t, families, "goms_server_panics_total", with("method", "Get"), 1)
	}
	// The child's call to its parent: a client call, and one more server
	// call over gRPC.
	client := map[string]string{"service": "goms.v1.GoMsService", "method": "Get", "protocol": "grpc", "code": "ok"}
	wantValue(t, families, "goms_client_requests_total", client, 1)
	wantValue(t, families, "goms_client_request_duration_seconds", client, 1)
	wantValue(t, families, "goms_server_requests_total", client, 1)
	wantValue(t, families, "goms_server_requests_total", map[string]string{"service": "child.v1.ChildService", "method": "Create", "protocol": "connect", "code": "ok"}, 1)
	// Counters and histograms carry the code; gauges and sizes do not.
	for name, withCode := range map[string]bool{
		"goms_server_requests_total": true, "goms_server_request_duration_seconds": true,
		"goms_server_in_flight_requests": false, "goms_server_received_message_bytes": false,
	} {
		for _, m := range families[name].GetMetric() {
			if _, ok := labelMap(m)["code"]; ok != withCode {
				t.Errorf("%s: code label present %v, want %v", name, ok, withCode)
			}
		}
	}
	// Runtime and process collectors.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
		if _, ok := families[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	// Series exist for the calls made only: nothing called the health
	// service, so it has none (no series made up front per method).
	for _, m := range families["goms_server_requests_total"].GetMetric() {
		if svc := labelMap(m)["service"]; svc == "grpc.health.v1.Health" {
			t.Errorf("a series for %s, which nothing called", svc)
		}
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := gomstest.HTTP1(t).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s\n%s", url, res.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

func labelMap(m *dto.Metric) map[string]string {
	out := make(map[string]string)
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// wantValue checks the one series of the family name whose labels are
// exactly labels: a counter's or gauge's value, a histogram's count.
func wantValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	var found []*dto.Metric
	for _, m := range families[name].GetMetric() {
		got := labelMap(m)
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Errorf("%s%v: %d series, want 1", name, labels, len(found))
		return
	}
	m := found[0]
	var got float64
	switch {
	case m.Counter != nil:
		got = m.GetCounter().GetValue()
	case m.Gauge != nil:
		got = m.GetGauge().GetValue()
	case m.Histogram != nil:
		got = float64(m.GetHistogram().GetSampleCount())
		if strings.HasSuffix(name, "_seconds") && want > 0 && m.GetHistogram().GetSampleSum() <= 0 {
			t.Errorf("%s%v: sum %v", name, labels, m.GetHistogram().GetSampleSum())
		}
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestNewWithRegistry(t *testing.T) {
	t.Parallel()
	m, err := prom.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prom.New(prom.WithRegistry(m.Registry())); err == nil {
		t.Error("registering the goms metrics twice on one registry did not fail")
	}
	if m.Name() != "metrics" {
		t.Errorf("Name() = %q", m.Name())
	}
}
