package prom

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reversTeam/go-ms/goms"
)

var _ goms.AdmissionObserver = (*Metrics)(nil)

// admissionMetrics count the decisions of goms's admission layer and rate
// limits, and show each listener's adaptive limit.
type admissionMetrics struct {
	decisions *prometheus.CounterVec
	limit     *prometheus.GaugeVec
}

func newAdmissionMetrics() *admissionMetrics {
	return &admissionMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "goms_server_admission_decisions_total",
			Help: "Calls shed, rate limited or given a server deadline, by service, method, decision and reason.",
		}, []string{"service", "method", "decision", "reason"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "goms_server_adaptive_limit",
			Help: "The adaptive concurrency limit of each listener.",
		}, []string{"listener"}),
	}
}

func (a *admissionMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.decisions, a.limit}
}

// ObserveAdmission counts a decision in
// goms_server_admission_decisions_total.
func (m *Metrics) ObserveAdmission(e goms.AdmissionEvent) {
	service, method, _ := strings.Cut(strings.TrimPrefix(e.Procedure, "/"), "/")
	m.admission.decisions.WithLabelValues(service, method, string(e.Kind), e.Reason).Inc()
}

// ObserveLimit sets goms_server_adaptive_limit of a listener.
func (m *Metrics) ObserveLimit(listener string, limit int) {
	m.admission.limit.WithLabelValues(listener).Set(float64(limit))
}
