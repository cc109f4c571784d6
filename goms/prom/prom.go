// Package prom records the RED metrics of goms servers and their clients
// with Prometheus, and serves them on the admin listener under /metrics.
//
//	metrics, err := prom.New()
//	if err != nil {
//		return err
//	}
//	srv, err := goms.New(goms.Config{
//		Listeners: listeners,
//		Admin:     goms.Admin{Addr: "127.0.0.1:4242"},
//		Plugins:   []goms.Plugin{metrics},
//	})
//
// Server calls are counted in goms_server_requests_total and timed in
// goms_server_request_duration_seconds, by service, method, protocol and
// code; goms_server_in_flight_requests counts calls running, and
// goms_server_received_message_bytes and goms_server_sent_message_bytes
// size each message. goms_server_panics_total counts handlers that
// panicked (goms.ErrPanic). The clients of Server.ClientOptions get the
// same series under goms_client_, without panics.
//
// goms_server_admission_decisions_total counts the calls goms's admission
// shed, rate limited or gave a deadline, by service, method, decision and
// reason (see goms.AdmissionEvent), and goms_server_adaptive_limit shows
// each listener's adaptive concurrency limit.
//
// Labels are resolved once per procedure, protocol and code and then read
// from arrays, so recording a call allocates nothing. The status page of
// goms's admin listener reads its rates and quantiles from the same
// histograms (ReportCalls), once a second: it counts no call twice.
package prom

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/reversTeam/go-ms/goms"
)

// MetricsPath is the admin route the metrics are served on.
const MetricsPath = "/metrics"

// defaultDurationBuckets are the bounds, in seconds, of the duration
// histograms unless WithDurationBuckets says otherwise.
var defaultDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// sizeBuckets are the bounds, in bytes, of the message size histograms:
// powers of 4 from 64 B to 16 MiB.
var sizeBuckets = prometheus.ExponentialBuckets(64, 4, 10)

// Metrics is the metrics plugin: a goms.ClientPlugin for the calls of a
// server and of its clients, and a goms.AdminPlugin that serves them.
// Create it with New; one Metrics serves one goms.Server.
type Metrics struct {
	registry  *prometheus.Registry
	server    *interceptor
	client    *interceptor
	admission *admissionMetrics
}

var (
	_ goms.ClientPlugin = (*Metrics)(nil)
	_ goms.AdminPlugin  = (*Metrics)(nil)
)

// Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	registry *prometheus.Registry
	buckets  []float64
}

// WithRegistry registers the metrics on r, and serves r under /metrics,
// instead of a registry of their own. The default registry also holds the
// Go runtime and process collectors; with WithRegistry, adding them is up
// to the owner of r. A nil r means the default.
func WithRegistry(r *prometheus.Registry) Option {
	return optionFunc(func(c *config) { c.registry = r })
}

// WithDurationBuckets sets the bounds, in seconds, of the duration
// histograms. Default: .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
// 2.5, 5 and 10 (1 ms to 10 s); no bounds means the default.
func WithDurationBuckets(bounds ...float64) Option {
	return optionFunc(func(c *config) { c.buckets = bounds })
}

// New returns the metrics plugin. It fails when a metric cannot be
// registered, as when WithRegistry gives a registry that already holds
// goms metrics.
func New(opts ...Option) (*Metrics, error) {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if len(c.buckets) == 0 {
		c.buckets = defaultDurationBuckets
	}
	reg := c.registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		if err := registerAll(reg,
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		); err != nil {
			return nil, err
		}
	}
	server := newInterceptor("server", c.buckets)
	client := newInterceptor("client", c.buckets)
	if err := registerAll(reg, server.collectors()...); err != nil {
		return nil, err
	}
	if err := registerAll(reg, client.collectors()...); err != nil {
		return nil, err
	}
	admission := newAdmissionMetrics()
	if err := registerAll(reg, admission.collectors()...); err != nil {
		return nil, err
	}
	return &Metrics{registry: reg, server: server, client: client, admission: admission}, nil
}

func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("goms/prom: %w", err)
		}
	}
	return nil
}

// Name returns "metrics".
func (m *Metrics) Name() string { return "metrics" }

// Interceptor returns the interceptor that records the calls of handlers.
func (m *Metrics) Interceptor() connect.Interceptor { return m.server }

// ClientInterceptor returns the interceptor that records the calls of
// clients.
func (m *Metrics) ClientInterceptor() connect.Interceptor { return m.client }

// AdminRoutes serves the registry under MetricsPath.
func (m *Metrics) AdminRoutes() map[string]http.Handler {
	return map[string]http.Handler{MetricsPath: m.Handler()}
}

// Handler serves the registry in the Prometheus exposition formats, for
// programs that serve metrics elsewhere than on the admin listener.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Registry returns the registry the metrics are registered on.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// The protocols and codes that index the per-procedure arrays.
const (
	protocolConnect = iota
	protocolGRPC
	protocolGRPCWeb
	protocolOther
	numProtocols
)

var protocolNames = [numProtocols]string{connect.ProtocolConnect, connect.ProtocolGRPC, connect.ProtocolGRPCWeb, "other"}

func protocolIndex(p string) int {
	switch p {
	case connect.ProtocolConnect:
		return protocolConnect
	case connect.ProtocolGRPC:
		return protocolGRPC
	case connect.ProtocolGRPCWeb:
		return protocolGRPCWeb
	}
	return protocolOther
}

// numCodes covers "ok" (0) and every connect.Code (1 to 16).
const numCodes = int(connect.CodeUnauthenticated) + 1

func codeIndex(err error) int {
	if err == nil {
		return 0
	}
	// connect.CodeOf allocates (errors.As); handlers mostly return a
	// *connect.Error as is.
	var c int
	if ce, ok := err.(*connect.Error); ok {
		c = int(ce.Code())
	} else {
		c = int(connect.CodeOf(err))
	}
	if c <= 0 || c >= numCodes {
		return int(connect.CodeUnknown)
	}
	return c
}

func codeName(i int) string {
	if i == 0 {
		return "ok"
	}
	return connect.Code(i).String()
}

// interceptor holds the metric vectors of one side, server or client, and
// the children resolved for each procedure.
type interceptor struct {
	side      string
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
	received  *prometheus.HistogramVec
	sent      *prometheus.HistogramVec
	panics    *prometheus.CounterVec // server only
	mu        sync.Mutex
	procedure map[string]*procedureMetrics
}

func newInterceptor(side string, buckets []float64) *interceptor {
	ns := "goms_" + side + "_"
	labels := []string{"service", "method", "protocol"}
	withCode := append(labels[:len(labels):len(labels)], "code")
	i := &interceptor{
		side: side,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "requests_total",
			Help: "Calls completed, by service, method, protocol and code.",
		}, withCode),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ns + "request_duration_seconds",
			Help:    "Duration of completed calls, by service, method, protocol and code.",
			Buckets: buckets,
		}, withCode),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: ns + "in_flight_requests",
			Help: "Calls running, by service, method and protocol.",
		}, labels),
		received: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ns + "received_message_bytes",
			Help:    "Size of each message received, by service, method and protocol.",
			Buckets: sizeBuckets,
		}, labels),
		sent: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ns + "sent_message_bytes",
			Help:    "Size of each message sent, by service, method and protocol.",
			Buckets: sizeBuckets,
		}, labels),
		procedure: make(map[string]*procedureMetrics),
	}
	if side == "server" {
		i.panics = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "panics_total",
			Help: "Calls whose handler panicked, by service, method and protocol.",
		}, labels)
	}
	return i
}

func (i *interceptor) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{i.requests, i.duration, i.inFlight, i.received, i.sent}
	if i.panics != nil {
		cs = append(cs, i.panics)
	}
	return cs
}

// procedureMetrics caches the metric children of one procedure, one
// protocol slot and one code slot at a time, filled at first use.
type procedureMetrics struct {
	i               *interceptor
	procedure       string
	service, method string
	protocols       [numProtocols]atomic.Pointer[protocolMetrics]
	mu              sync.Mutex
}

type protocolMetrics struct {
	p        *procedureMetrics
	protocol string
	inFlight prometheus.Gauge
	received prometheus.Observer
	sent     prometheus.Observer
	panics   prometheus.Counter // nil on the client side
	codes    [numCodes]atomic.Pointer[codeMetrics]
}

type codeMetrics struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// forProcedure returns the cache of a procedure, making it at first use.
// last is the cache the calling closure used before: connect wraps each
// procedure separately, so it nearly always matches and the map is only
// read when a closure serves several procedures.
func (i *interceptor) forProcedure(last *atomic.Pointer[procedureMetrics], procedure string) *procedureMetrics {
	if p := last.Load(); p != nil && p.procedure == procedure {
		return p
	}
	i.mu.Lock()
	p, ok := i.procedure[procedure]
	if !ok {
		service, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
		p = &procedureMetrics{i: i, procedure: procedure, service: service, method: method}
		i.procedure[procedure] = p
	}
	i.mu.Unlock()
	last.Store(p)
	return p
}

func (p *procedureMetrics) forProtocol(protocol string) *protocolMetrics {
	idx := protocolIndex(protocol)
	if m := p.protocols[idx].Load(); m != nil {
		return m
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.protocols[idx].Load(); m != nil {
		return m
	}
	name := protocolNames[idx]
	m := &protocolMetrics{
		p:        p,
		protocol: name,
		inFlight: p.i.inFlight.WithLabelValues(p.service, p.method, name),
		received: p.i.received.WithLabelValues(p.service, p.method, name),
		sent:     p.i.sent.WithLabelValues(p.service, p.method, name),
	}
	if p.i.panics != nil {
		m.panics = p.i.panics.WithLabelValues(p.service, p.method, name)
	}
	p.protocols[idx].Store(m)
	return m
}

func (m *protocolMetrics) forCode(err error) *codeMetrics {
	idx := codeIndex(err)
	if c := m.codes[idx].Load(); c != nil {
		return c
	}
	p := m.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := m.codes[idx].Load(); c != nil {
		return c
	}
	code := codeName(idx)
	c := &codeMetrics{
		requests: p.i.requests.WithLabelValues(p.service, p.method, m.protocol, code),
		duration: p.i.duration.WithLabelValues(p.service, p.method, m.protocol, code),
	}
	m.codes[idx].Store(c)
	return c
}
