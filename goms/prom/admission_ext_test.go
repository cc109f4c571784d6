package prom_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/prom"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// TestAdmissionMetrics checks the series of admission decisions and the
// adaptive limit gauge.
func TestAdmissionMetrics(t *testing.T) {
	t.Parallel()
	metrics, err := prom.New()
	if err != nil {
		t.Fatal(err)
	}
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", AdaptiveLimit: goms.AdaptiveLimit{Max: 300}}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
		Plugins:   []goms.Plugin{metrics},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			gomsv1connect.GoMsServiceName + "/List": {Timeout: time.Second, MaxTimeout: 2 * time.Second},
			gomsv1connect.GoMsServiceName + "/Get":  {RateLimit: goms.RateLimit{Rate: 0.1, Burst: 1}},
		}},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
	})
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"), connect.WithGRPC())
	for range 2 { // no deadline: the default
		if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // capped
	defer cancel()
	if _, err := client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
		t.Fatal(err)
	}
	for range 3 { // one let through (not found), two refused
		_, _ = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
	}
	families := scrape(t, run.URL("admin")+prom.MetricsPath)
	labels := func(method, decision, reason string) map[string]string {
		return map[string]string{"service": gomsv1connect.GoMsServiceName, "method": method, "decision": decision, "reason": reason}
	}
	wantValue(t, families, "goms_server_admission_decisions_total", labels("List", "deadline", "default"), 2)
	wantValue(t, families, "goms_server_admission_decisions_total", labels("List", "deadline", "max"), 1)
	wantValue(t, families, "goms_server_admission_decisions_total", labels("Get", "rate_limited", "method"), 2)
	wantValue(t, families, "goms_server_adaptive_limit", map[string]string{"listener": "gateway"}, 300)
}
