package prom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/reversTeam/go-ms/goms"
)

// ObserveRemotes adds the state of srv's remote-service clients
// (goms.Server.Remotes) to the metrics, read at each scrape:
// goms_remote_calls_total, goms_remote_attempts_total (retries and hedges
// included), goms_remote_hedges_total, goms_remote_throttled_total and
// goms_remote_ejections_total by remote; and by remote and endpoint,
// goms_remote_endpoint_up (1 when ready, 0 otherwise: draining, checking,
// ejected, no_service or unavailable; with the state as a label),
// goms_remote_endpoint_in_flight and
// goms_remote_endpoint_latency_seconds (a moving average). Call it once,
// after goms.New.
func (m *Metrics) ObserveRemotes(srv *goms.Server) error {
	return registerAll(m.registry, remotesCollector{srv: srv})
}

var (
	remoteLabels   = []string{"remote", "service"}
	endpointLabels = []string{"remote", "endpoint"}
	remoteCounters = []struct {
		desc *prometheus.Desc
		get  func(goms.RemoteStatus) int64
	}{
		{prometheus.NewDesc("goms_remote_calls_total", "Calls sent to a remote service.", remoteLabels, nil), func(r goms.RemoteStatus) int64 { return r.Calls }},
		{prometheus.NewDesc("goms_remote_attempts_total", "Attempts of calls to a remote service, retries and hedges included.", remoteLabels, nil), func(r goms.RemoteStatus) int64 { return r.Attempts }},
		{prometheus.NewDesc("goms_remote_hedges_total", "Second attempts of hedged calls.", remoteLabels, nil), func(r goms.RemoteStatus) int64 { return r.Hedges }},
		{prometheus.NewDesc("goms_remote_throttled_total", "Calls failed at once by adaptive throttling.", remoteLabels, nil), func(r goms.RemoteStatus) int64 { return r.Throttled }},
		{prometheus.NewDesc("goms_remote_ejections_total", "Endpoints ejected by outlier detection.", remoteLabels, nil), func(r goms.RemoteStatus) int64 { return r.Ejections }},
	}
	endpointUp       = prometheus.NewDesc("goms_remote_endpoint_up", "1 while an endpoint is ready for calls; state is ready, draining, checking, ejected, no_service or unavailable.", append(endpointLabels, "state"), nil)
	endpointInFlight = prometheus.NewDesc("goms_remote_endpoint_in_flight", "Calls in flight on an endpoint.", endpointLabels, nil)
	endpointLatency  = prometheus.NewDesc("goms_remote_endpoint_latency_seconds", "Moving average of an endpoint's call latency.", endpointLabels, nil)
)

type remotesCollector struct{ srv *goms.Server }

func (c remotesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, rc := range remoteCounters {
		ch <- rc.desc
	}
	ch <- endpointUp
	ch <- endpointInFlight
	ch <- endpointLatency
}

func (c remotesCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.srv.Remotes() {
		for _, rc := range remoteCounters {
			ch <- prometheus.MustNewConstMetric(rc.desc, prometheus.CounterValue, float64(rc.get(r)), r.Name, r.Service)
		}
		for _, ep := range r.Endpoints {
			up := 0.0
			if ep.State == "ready" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(endpointUp, prometheus.GaugeValue, up, r.Name, ep.Addr, ep.State)
			ch <- prometheus.MustNewConstMetric(endpointInFlight, prometheus.GaugeValue, float64(ep.InFlight), r.Name, ep.Addr)
			ch <- prometheus.MustNewConstMetric(endpointLatency, prometheus.GaugeValue, ep.Latency.Seconds(), r.Name, ep.Addr)
		}
	}
}
