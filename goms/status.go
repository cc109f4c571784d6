package goms

import (
	"embed"
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// Paths of the status page on the admin listener, which also serves it at
// "/" unless an AdminPlugin serves that path; statusJSONPath serves the
// document the page shows, which docs/observability.md describes field by
// field; its fields are only ever added to.
const (
	statusPath     = "/status"
	statusJSONPath = "/status.json"
)

// CallTotals are the counts, since a process started, of the calls of one
// procedure in one protocol that ended with one code, on one side: the
// calls a server handled, or those its clients made. A CallReporter gives
// them to the status page.
type CallTotals struct {
	// Client is true for the calls of clients, false for those of
	// handlers.
	Client bool
	// Procedure is "/pkg.Service/Method".
	Procedure string
	// Protocol is connect.ProtocolConnect, ProtocolGRPC or
	// ProtocolGRPCWeb.
	Protocol string
	// Code is the code the calls ended with; 0 for success.
	Code connect.Code
	// Count is how many calls ended so.
	Count uint64
	// Bounds are the upper bounds, in seconds, of the duration histogram,
	// and Buckets the cumulative count of calls at most each bound took;
	// both sorted, of one length, without the +Inf bound.
	Bounds  []float64
	Buckets []uint64
}

// CallReporter is a Plugin that counts calls, such as the metrics of
// goms/prom: the status page reads its totals once a second rather than
// counting calls a second time. Without one the page lists methods
// without rates.
type CallReporter interface {
	Plugin
	// ReportCalls calls f once for each CallTotals; f must not keep the
	// slices.
	ReportCalls(f func(CallTotals))
}

// maxRecentErrors is how many failed calls the status page lists.
const maxRecentErrors = 32

//go:embed statuspage
var statusPage embed.FS

// statusBoard gathers what the status page shows: snapshots of the call totals
// of the CallReporter plugins, one a second over the last minute, and the
// last calls that failed.
type statusBoard struct {
	reporters []CallReporter
	started   time.Time
	log       *admissionLog
	ready     *atomic.Bool
	// listeners and remotes are the server's, set once New has built
	// them; config lists the remotes in the configuration's order.
	listeners []*listener
	remotes   map[string]*remote
	config    []Remote

	mu      sync.Mutex
	samples []callSample // oldest first, at most one per second of the window

	// errors is a ring of the last failed calls; next counts the calls
	// recorded, the slot of the next is next % maxRecentErrors.
	errors [maxRecentErrors]atomic.Pointer[errorRecord]
	next   atomic.Uint64
}

func newStatusBoard(plugins []Plugin, log *admissionLog, ready *atomic.Bool) *statusBoard {
	st := &statusBoard{started: time.Now(), log: log, ready: ready}
	for _, p := range plugins {
		if r, ok := p.(CallReporter); ok {
			st.reporters = append(st.reporters, r)
		}
	}
	return st
}

// errorRecord is one failed call.
type errorRecord struct {
	Time      time.Time `json:"time"`
	Procedure string    `json:"procedure"`
	Code      string    `json:"code"`
	RequestID string    `json:"request_id"`
}

// failed records a call that ended with err. Only the code, the procedure
// and the request id are kept: never headers, messages or error texts,
// which may carry what the caller sent.
func (st *statusBoard) failed(procedure string, err error, requestID string) {
	rec := &errorRecord{Time: time.Now(), Procedure: procedure, RequestID: requestID, Code: connect.CodeOf(err).String()}
	n := st.next.Add(1) - 1
	st.errors[n%maxRecentErrors].Store(rec)
}

// recentErrors returns the recorded failed calls, newest first.
func (st *statusBoard) recentErrors() []errorRecord {
	out := make([]errorRecord, 0, maxRecentErrors)
	for i := range st.errors {
		if rec := st.errors[i].Load(); rec != nil {
			out = append(out, *rec)
		}
	}
	slices.SortFunc(out, func(a, b errorRecord) int { return b.Time.Compare(a.Time) })
	return out
}

// statusDoc is the document served at statusJSONPath.
type statusDoc struct {
	Time      time.Time        `json:"time"`
	Process   processStatus    `json:"process"`
	Listeners []listenerStatus `json:"listeners"`
	// CallStats says whether methods have rates and quantiles, which
	// take a CallReporter plugin; WindowSeconds is the time they cover.
	CallStats     bool            `json:"call_stats"`
	WindowSeconds float64         `json:"window_seconds"`
	Services      []serviceStatus `json:"services"`
	Clients       []methodStatus  `json:"clients"`
	Remotes       []remoteStatus  `json:"remotes"`
	Admission     admissionStatus `json:"admission"`
	Errors        []errorRecord   `json:"errors"`
}

type processStatus struct {
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	GOMAXPROCS    int       `json:"gomaxprocs"`
	Goroutines    int       `json:"goroutines"`
	RSSBytes      int64     `json:"rss_bytes"`
	Ready         bool      `json:"ready"`
}

type listenerStatus struct {
	Name        string `json:"name"`
	Address     string `json:"address"`
	Mode        string `json:"mode"`
	Engine      string `json:"engine"`
	TLS         bool   `json:"tls"`
	Admin       bool   `json:"admin"`
	Connections int64  `json:"connections"`
	// InFlight counts the calls admission counts (see admission.calls);
	// null when it counts none.
	InFlight *int64 `json:"in_flight"`
}

type serviceStatus struct {
	Name      string   `json:"name"`
	Listeners []string `json:"listeners"`
	// Remote is the name of the remote whose service an edge exposes
	// here; empty for a service this process runs.
	Remote  string         `json:"remote,omitempty"`
	Builtin bool           `json:"builtin"`
	Methods []methodStatus `json:"methods"`
}

// methodStatus covers the calls of the window.
type methodStatus struct {
	Procedure string  `json:"procedure"`
	Calls     uint64  `json:"calls"`
	Errors    uint64  `json:"errors"`
	Rate      float64 `json:"rate"`       // calls per second
	ErrorRate float64 `json:"error_rate"` // the share of calls that failed, 0 to 1
	// P50Ms and P99Ms are the quantiles of the durations, in
	// milliseconds, estimated from histogram buckets; null without calls.
	P50Ms *float64 `json:"p50_ms"`
	P99Ms *float64 `json:"p99_ms"`
}

type remoteStatus struct {
	Name      string           `json:"name"`
	Service   string           `json:"service"`
	Expose    []string         `json:"expose"`
	Calls     int64            `json:"calls"`
	Attempts  int64            `json:"attempts"`
	Hedges    int64            `json:"hedges"`
	Throttled int64            `json:"throttled"`
	Ejections int64            `json:"ejections"`
	Healthy   int              `json:"healthy"`
	Endpoints []endpointStatus `json:"endpoints"`
}

type endpointStatus struct {
	Address   string  `json:"address"`
	State     string  `json:"state"`
	Healthy   bool    `json:"healthy"`
	InFlight  int64   `json:"in_flight"`
	LatencyMs float64 `json:"latency_ms"`
}

type admissionStatus struct {
	Shed        int64 `json:"shed"`
	RateLimited int64 `json:"rate_limited"`
	Throttled   int64 `json:"throttled"`
}

// doc builds the status document.
func (st *statusBoard) doc() statusDoc {
	now := time.Now()
	d := statusDoc{
		Time: now,
		Process: processStatus{
			Version:       buildVersion(),
			GoVersion:     runtime.Version(),
			Started:       st.started,
			UptimeSeconds: now.Sub(st.started).Seconds(),
			GOMAXPROCS:    runtime.GOMAXPROCS(0),
			Goroutines:    runtime.NumGoroutine(),
			RSSBytes:      rss(),
			Ready:         st.ready.Load(),
		},
		CallStats: len(st.reporters) > 0,
		Clients:   []methodStatus{},
		Errors:    st.recentErrors(),
		Admission: admissionStatus{
			Shed:        st.log.shed.Load(),
			RateLimited: st.log.rateLimited.Load(),
		},
	}
	d.Listeners = st.listenerStatuses()

	// Calls of the window: now against the oldest snapshot.
	var calls map[callKey]methodStatus
	if d.CallStats {
		base, ok := st.baseline()
		cur := st.snapshot()
		if !ok {
			base = callSample{at: st.started}
		}
		d.WindowSeconds = cur.at.Sub(base.at).Seconds()
		calls = make(map[callKey]methodStatus, len(cur.calls))
		for k, c := range cur.calls {
			calls[k] = c.since(base.calls[k], k.procedure, d.WindowSeconds)
		}
	}
	method := func(client bool, procedure string) methodStatus {
		if m, ok := calls[callKey{client, procedure}]; ok {
			return m
		}
		return methodStatus{Procedure: procedure}
	}

	// Services by name, in the order listeners mount them.
	byName := make(map[string]*serviceStatus)
	var order []string
	for _, l := range st.listeners {
		for _, name := range l.mux.names {
			ss := byName[name]
			if ss == nil {
				ss = &serviceStatus{Name: name, Builtin: builtinService(name)}
				if r, ok := st.remotes[name]; ok {
					ss.Remote = r.Name
				}
				byName[name] = ss
				order = append(order, name)
			}
			ss.Listeners = append(ss.Listeners, l.Name)
		}
	}
	for _, name := range order {
		ss := byName[name]
		procs := serviceProcedures(name)
		for k := range calls {
			if !k.client && strings.HasPrefix(k.procedure, "/"+name+"/") && !slices.Contains(procs, k.procedure) {
				procs = append(procs, k.procedure)
			}
		}
		slices.Sort(procs)
		ss.Methods = []methodStatus{}
		for _, p := range procs {
			ss.Methods = append(ss.Methods, method(false, p))
		}
		d.Services = append(d.Services, *ss)
	}
	for k := range calls {
		if k.client {
			d.Clients = append(d.Clients, method(true, k.procedure))
		}
	}
	slices.SortFunc(d.Clients, func(a, b methodStatus) int { return strings.Compare(a.Procedure, b.Procedure) })

	d.Remotes = st.remoteStatuses()
	for _, r := range d.Remotes {
		d.Admission.Throttled += r.Throttled
	}
	return d
}

// listenerStatuses reports the listeners, in the configuration's order.
func (st *statusBoard) listenerStatuses() []listenerStatus {
	var out []listenerStatus
	for _, l := range st.listeners {
		ls := listenerStatus{
			Name: l.Name, Address: l.Addr, Mode: string(l.Mode), Engine: string(l.Engine),
			TLS: l.tlsConfig != nil, Admin: l.admin,
			Connections: l.conns.Load(),
		}
		if n, ok := l.admission.calls(); ok && !l.admin {
			ls.InFlight = &n
		}
		if a := l.bound.Load(); a != nil {
			ls.Address = *a
		}
		if l.admin {
			ls.Mode = ""
		}
		out = append(out, ls)
	}
	return out
}

// remoteStatuses reports the remotes, in the configuration's order.
func (st *statusBoard) remoteStatuses() []remoteStatus {
	out := []remoteStatus{}
	for _, r := range remotesStatus(st.config, st.remotes) {
		rs := remoteStatus{
			Name: r.Name, Service: r.Service, Expose: []string{},
			Calls: r.Calls, Attempts: r.Attempts, Hedges: r.Hedges, Throttled: r.Throttled, Ejections: r.Ejections,
			Endpoints: []endpointStatus{},
		}
		if rem := st.remotes[r.Service]; rem != nil && rem.Expose != nil {
			rs.Expose = rem.Expose
		}
		for _, ep := range r.Endpoints {
			healthy := ep.State == "ready"
			if healthy {
				rs.Healthy++
			}
			rs.Endpoints = append(rs.Endpoints, endpointStatus{
				Address: ep.Addr, State: ep.State, Healthy: healthy, InFlight: ep.InFlight,
				LatencyMs: float64(ep.Latency) / float64(time.Millisecond),
			})
		}
		out = append(out, rs)
	}
	return out
}

var buildVersion = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, modified string
	for _, kv := range info.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " (" + rev[:min(len(rev), 12)] + modified + ")"
	}
	return v
})

// rss returns the resident set size of the process, 0 where /proc does
// not tell it.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// routes returns the admin routes of the status page.
func (st *statusBoard) routes() map[string]http.Handler {
	page := func(name, contentType string) http.Handler {
		body, err := statusPage.ReadFile("statuspage/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !getOrHead(w, r) {
				return
			}
			statusHeaders(w, contentType)
			_, _ = w.Write(body)
		})
	}
	html := page("index.html", "text/html; charset=utf-8")
	return map[string]http.Handler{
		"/":                 html,
		statusPath:          html,
		statusPath + ".js":  page("status.js", "text/javascript; charset=utf-8"),
		statusPath + ".css": page("status.css", "text/css; charset=utf-8"),
		statusJSONPath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !getOrHead(w, r) {
				return
			}
			statusHeaders(w, "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(st.doc())
		}),
	}
}

func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// statusHeaders keep the page's resources its own: nothing loads from
// elsewhere and no other site frames it.
func statusHeaders(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
}
