package prom

import (
	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/reversTeam/go-ms/goms"
)

var _ goms.CallReporter = (*Metrics)(nil)

// ReportCalls gives the status page of goms's admin listener the totals
// of goms_server_request_duration_seconds and
// goms_client_request_duration_seconds, read from the histograms
// themselves: the page counts nothing on the path of calls.
func (m *Metrics) ReportCalls(f func(goms.CallTotals)) {
	m.server.report(false, f)
	m.client.report(true, f)
}

func (i *interceptor) report(client bool, f func(goms.CallTotals)) {
	i.mu.Lock()
	procs := make([]*procedureMetrics, 0, len(i.procedure))
	for _, p := range i.procedure {
		procs = append(procs, p)
	}
	i.mu.Unlock()
	var (
		metric  dto.Metric
		bounds  []float64
		buckets []uint64
	)
	for _, p := range procs {
		for idx := range p.protocols {
			pm := p.protocols[idx].Load()
			if pm == nil {
				continue
			}
			for code := range pm.codes {
				c := pm.codes[code].Load()
				if c == nil {
					continue
				}
				h, ok := c.duration.(prometheus.Metric)
				if !ok {
					continue
				}
				metric.Reset()
				if err := h.Write(&metric); err != nil || metric.GetHistogram() == nil {
					continue
				}
				hist := metric.GetHistogram()
				bounds, buckets = bounds[:0], buckets[:0]
				for _, b := range hist.GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
					buckets = append(buckets, b.GetCumulativeCount())
				}
				f(goms.CallTotals{
					Client: client, Procedure: p.procedure, Protocol: pm.protocol,
					Code: connect.Code(code), Count: hist.GetSampleCount(),
					Bounds: bounds, Buckets: buckets,
				})
			}
		}
	}
}
