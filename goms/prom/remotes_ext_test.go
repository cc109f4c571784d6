package prom_test

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// TestObserveRemotes calls a remote service and reads the remote's series
// from /metrics: the calls counted, the endpoint up and ready.
func TestObserveRemotes(t *testing.T) {
	t.Parallel()
	backend := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
	})
	metrics, err := prom.New()
	if err != nil {
		t.Fatal(err)
	}
	caller := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
		Plugins:   []goms.Plugin{metrics},
		Remotes:   []goms.Remote{{Name: "items", Service: gomsv1connect.GoMsServiceName, Targets: []string{backend.Addr("grpc")}}},
	}, func(srv *goms.Server) error { return metrics.ObserveRemotes(srv) })
	hc, url := caller.Server.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(hc, url)
	for i := range 3 {
		if _, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: fmt.Sprint("m", i)})); err != nil {
			t.Fatal(err)
		}
	}
	res, err := gomstest.HTTP1(t).Get(caller.URL("admin") + prom.MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	calls := families["goms_remote_calls_total"]
	if calls == nil || len(calls.GetMetric()) != 1 || calls.GetMetric()[0].GetCounter().GetValue() != 3 {
		t.Errorf("goms_remote_calls_total = %v, want 3", calls)
	}
	up := families["goms_remote_endpoint_up"]
	if up == nil || len(up.GetMetric()) != 1 || up.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("goms_remote_endpoint_up = %v, want one endpoint at 1", up)
	}
	var labels []string
	for _, l := range up.GetMetric()[0].GetLabel() {
		labels = append(labels, l.GetName()+"="+l.GetValue())
	}
	if got := strings.Join(labels, ","); got != "endpoint="+backend.Addr("grpc")+",remote=items,state=ready" {
		t.Errorf("goms_remote_endpoint_up labels %s", got)
	}
}
