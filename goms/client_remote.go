package goms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Remote says where a service this process does not mount runs, so that
// Server.Client reaches it over the network, and how its calls behave.
//
// Calls travel as gRPC over grpc-go's client: kept-alive HTTP/2
// connections to every endpoint, health-checked per service through
// grpc.health.v1 (an endpoint that does not serve the service, or reports
// NOT_SERVING while it drains, gets no new calls while others serve),
// balanced to the endpoint
// with fewer calls in flight of two, with outlier detection (an endpoint
// whose calls keep failing is left out for a growing time), retries of
// idempotent methods under a retry budget, transparent retries of calls
// that never left, and pings that find dead peers. Endpoints must accept
// gRPC: a listener in grpc mode (cheapest: the grpc engine) or gateway
// mode.
type Remote struct {
	// Name identifies the remote in configuration keys
	// (remotes.NAME.targets) and errors.
	Name string `yaml:"name"`
	// Service is the fully-qualified protobuf service name, such as
	// goms.v1.GoMsService. Its generated package must be linked into the
	// program, which a program calling it does anyway.
	Service string `yaml:"service"`
	// Targets are the service's endpoints as "host:port" (or
	// "dns:///host:port"). A host name stands for every address it
	// resolves to, as a Kubernetes headless Service does, and is resolved
	// again every ResolveInterval.
	Targets []string `yaml:"targets"`
	// ResolveInterval is how often names are resolved again, and at most
	// once a second when a connection fails. Default 30s.
	ResolveInterval time.Duration `yaml:"resolve_interval"`
	// Idempotent lists methods (by name, such as "Get") that may be sent
	// again after a failure that may have reached a server, and hedged.
	// Methods whose proto says idempotency_level = NO_SIDE_EFFECTS or
	// IDEMPOTENT are idempotent already. Calls that never reached a server
	// are sent again whatever their method.
	Idempotent []string `yaml:"idempotent"`
	// Timeout is the deadline of unary calls Server.Client makes without
	// one; the remaining time of a call with a deadline travels with it.
	// Default 30s. Streams get none unless Methods gives them one, and an
	// edge forwards its callers' calls with the deadline they have.
	Timeout time.Duration `yaml:"timeout"`
	// MaxTimeout is the longest deadline a unary call may have: longer
	// ones are cut to it. Default 5m.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// HedgeDelay is how long a call of a side-effect-free method (NO_SIDE_EFFECTS or listed
	// in Idempotent) waits for its answer before a second attempt goes to
	// another endpoint; the first answer wins. Zero means the method's
	// recent 95th percentile latency (100ms until it is known). A remote
	// whose only target is an IP address has no other endpoint and is not
	// hedged.
	HedgeDelay time.Duration `yaml:"hedge_delay"`
	// RetryBudget is the share of calls that retries and hedges may add,
	// so that a struggling remote is not sent more. Default 0.1 (10 %);
	// it must be between 0 and 1.
	RetryBudget float64 `yaml:"retry_budget"`
	// Methods override the settings above for single methods.
	Methods []RemoteMethod `yaml:"methods"`
	// CAFile, when set, makes the client speak TLS, trusting the PEM
	// certificate authorities in it; without it, the client speaks h2c.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name to verify servers' certificates against,
	// when it is not the target's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are the client certificate presented to
	// servers that require mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Expose names listeners that serve the remote service as if it were
	// mounted here, forwarding each call, whatever its protocol (gRPC,
	// gRPC-Web, Connect, REST), to an endpoint with the balancing, health
	// checks and deadlines of Server.Client: an edge. Empty means the
	// service is only called through Server.Client.
	Expose []string `yaml:"expose"`
}

// RemoteMethod overrides the call settings of one method of a Remote.
type RemoteMethod struct {
	// Name is the method's name, such as "Get".
	Name string `yaml:"name"`
	// Timeout is the deadline of calls made without one; it applies to
	// streams too when set here. Default Remote.Timeout for unary methods.
	Timeout time.Duration `yaml:"timeout"`
	// MaxTimeout caps the deadline of calls. Default Remote.MaxTimeout for
	// unary methods.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// HedgeDelay overrides Remote.HedgeDelay.
	HedgeDelay time.Duration `yaml:"hedge_delay"`
	// NoHedge turns hedging off for a side-effect-free method.
	NoHedge bool `yaml:"no_hedge"`
}

const (
	defaultResolveInterval = 30 * time.Second
	defaultRemoteTimeout   = 30 * time.Second
	defaultMaxTimeout      = 5 * time.Minute
	defaultRetryBudget     = 0.1
	defaultHedgeDelay      = 100 * time.Millisecond
	dialTimeout            = 5 * time.Second
	// maxAnswerBytes bounds one message of a remote's answers, or
	// Config.MaxMessageBytes when that is larger.
	maxAnswerBytes = 64 << 20
)

// remote is a configured Remote at run time.
type remote struct {
	Remote
	env env
	// dialOptions make cc, which conn makes at the first call.
	dialOptions []grpc.DialOption
	ccMu        sync.Mutex
	cc          *grpc.ClientConn
	closed      bool
	// resolver is the running resolver of cc, once grpc-go has built it.
	resolver  atomic.Pointer[runningResolver]
	methods   map[string]*remoteMethod // by procedure
	endpoints endpointTable
	throttle  throttle
	budget    retryBudget
	hedges    hedgeGate
	stats     remoteStats
	// client serves Server.Client's calls: the bridge handlers without
	// the server's interceptors.
	client map[string]http.Handler
}

// remoteMethod is one method of a remote service and its call settings.
type remoteMethod struct {
	procedure           string
	desc                protoreflect.MethodDescriptor
	idempotent          bool
	timeout, maxTimeout time.Duration
	hedge               bool
	fixedDelay          time.Duration
	latency             latencyWindow
}

// remoteStats counts what a remote's calls did.
type remoteStats struct {
	calls, attempts, hedges, throttled, ejections atomic.Int64
}

func newRemote(e env, rc Remote) (*remote, error) {
	r := &remote{Remote: rc, env: e, methods: make(map[string]*remoteMethod), client: make(map[string]http.Handler)}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("goms: remote %q: %w", rc.Name, err)
	}
	r.endpoints = endpointTable{r: r, m: make(map[string]*endpointState)}
	r.budget.ratio = r.RetryBudget
	for p, m := range r.methods {
		r.client[p] = r.bridgeHandler(m, false, []connect.HandlerOption{connect.WithReadMaxBytes(e.cfg.MaxMessageBytes)})
	}
	creds := insecure.NewCredentials()
	tlsConfig, err := rc.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("goms: remote %q: %w", rc.Name, err)
	}
	if tlsConfig != nil {
		creds = credentials.NewTLS(tlsConfig)
	}
	r.dialOptions = []grpc.DialOption{
		grpc.WithResolvers(&targetResolver{r: r}),
		grpc.WithTransportCredentials(creds),
		grpc.WithAuthority(rc.Service),
		grpc.WithDefaultServiceConfig(r.serviceConfig()),
		grpc.WithConnectParams(grpc.ConnectParams{
			// An endpoint that comes back is connected again within a
			// second or so.
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: dialTimeout,
		}),
		// Pings find connections whose peer vanished without a word.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Answers are bounded apart from requests: an edge forwards
		// answers that may be larger than the requests it takes.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(max(e.cfg.MaxMessageBytes, maxAnswerBytes))),
		grpc.WithUserAgent("goms"),
		grpc.WithIdleTimeout(0),
	}
	return r, nil
}

// conn returns the remote's ClientConn, made at the first call or when
// Serve starts, whichever comes first; nil once the remote is closed.
func (r *remote) conn() (*grpc.ClientConn, error) {
	r.ccMu.Lock()
	defer r.ccMu.Unlock()
	if r.closed {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s (remote %q): %w", r.Service, r.Name, ErrServerClosed))
	}
	if r.cc == nil {
		cc, err := grpc.NewClient(resolverScheme+":///"+r.Name, r.dialOptions...)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("goms: remote %q: %w", r.Name, err))
		}
		cc.Connect()
		r.cc = cc
	}
	return r.cc, nil
}

// readyWait bounds how long a call waits for a connection when no
// endpoint is connected: long enough for a connection under way to be
// made, short enough to fail at once when no endpoint is up.
const readyWait = 300 * time.Millisecond

// awaitReady waits up to readyWait for a connected endpoint when none is.
// (grpc-go's ResetConnectBackoff would reconnect at once, but it reads the
// connection map outside its lock in v1.85: reconnections are bounded by
// the backoff's 1s maximum instead.)
func (r *remote) awaitReady(ctx context.Context, cc *grpc.ClientConn) {
	st := cc.GetState()
	if st == connectivity.Ready {
		return
	}
	r.resolveNow()
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	for st != connectivity.Ready && cc.WaitForStateChange(ctx, st) {
		st = cc.GetState()
	}
}

// resolveNow asks for the targets to be resolved again, at most once a
// second: when endpoints stop taking calls, as when pods of a rolling
// update drain, the names may already hold their replacements, which the
// periodic resolution would find only later.
func (r *remote) resolveNow() {
	if res := r.resolver.Load(); res != nil {
		res.ResolveNow(resolver.ResolveNowOptions{})
	}
}

// close closes the remote's connections; later calls fail.
func (r *remote) close() {
	r.ccMu.Lock()
	r.closed = true
	if r.cc != nil {
		_ = r.cc.Close()
	}
	r.ccMu.Unlock()
	// The health watches end with their endpoints.
	for _, ep := range r.endpoints.all() {
		ep.setConnected(&r.endpoints, false)
	}
}

// check validates the configuration and fills in defaults and the methods.
func (r *remote) check() error {
	if r.Name == "" {
		return fmt.Errorf("name must not be empty (service %q)", r.Service)
	}
	if !protoreflect.FullName(r.Service).IsValid() {
		return fmt.Errorf("service: %q is not a fully-qualified protobuf service name", r.Service)
	}
	if len(r.Targets) == 0 {
		return errors.New("targets: need at least one host:port")
	}
	for _, t := range r.Targets {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(t, "dns:///")); err != nil {
			return fmt.Errorf("target %q: %w", t, err)
		}
	}
	durations := []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{
		{"resolve_interval", &r.ResolveInterval, defaultResolveInterval},
		{"timeout", &r.Timeout, defaultRemoteTimeout},
		{"max_timeout", &r.MaxTimeout, defaultMaxTimeout},
		{"hedge_delay", &r.HedgeDelay, 0},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return fmt.Errorf("%s: %v is negative", d.key, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if r.Timeout > r.MaxTimeout {
		return fmt.Errorf("timeout: %v is longer than max_timeout %v", r.Timeout, r.MaxTimeout)
	}
	switch {
	case r.RetryBudget < 0 || r.RetryBudget > 1 || math.IsNaN(r.RetryBudget):
		return fmt.Errorf("retry_budget: %v is not between 0 and 1", r.RetryBudget)
	case r.RetryBudget == 0:
		r.RetryBudget = defaultRetryBudget
	}
	if err := r.addMethods(); err != nil {
		return err
	}
	for i, mc := range r.Methods {
		if err := r.configureMethod(fmt.Sprintf("methods[%d]", i), mc); err != nil {
			return err
		}
	}
	for _, m := range r.methods {
		if m.hedge && m.fixedDelay > 0 && m.timeout > 0 && m.fixedDelay >= m.timeout {
			return fmt.Errorf("hedge_delay: %v for %s is not shorter than its timeout %v: it would never hedge", m.fixedDelay, m.desc.Name(), m.timeout)
		}
	}
	return nil
}

// addMethods makes the methods of the remote service from its descriptor,
// with the remote's deadlines and hedging.
func (r *remote) addMethods() error {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(r.Service))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return fmt.Errorf("service %s is not linked into this program: import its generated package so that goms knows its methods", r.Service)
	}
	for i := range sd.Methods().Len() {
		md := sd.Methods().Get(i)
		m := &remoteMethod{procedure: "/" + r.Service + "/" + string(md.Name()), desc: md}
		if o, ok := md.Options().(*descriptorpb.MethodOptions); ok && o.GetIdempotencyLevel() != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN {
			m.idempotent = true
		}
		if !md.IsStreamingClient() && !md.IsStreamingServer() {
			m.timeout, m.maxTimeout = r.Timeout, r.MaxTimeout
		}
		r.methods[m.procedure] = m
	}
	for _, name := range r.Idempotent {
		m := r.methods["/"+r.Service+"/"+name]
		if m == nil {
			return fmt.Errorf("idempotent: %s has no method %q", r.Service, name)
		}
		m.idempotent = true
	}
	for _, m := range r.methods {
		m.hedge = m.idempotent && !m.desc.IsStreamingClient() && !m.desc.IsStreamingServer()
		m.fixedDelay = r.HedgeDelay
	}
	return nil
}

// configureMethod applies the entry key of Remote.Methods.
func (r *remote) configureMethod(key string, mc RemoteMethod) error {
	m := r.methods["/"+r.Service+"/"+mc.Name]
	if m == nil {
		return fmt.Errorf("%s: %s has no method %q", key, r.Service, mc.Name)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"timeout", mc.Timeout}, {"max_timeout", mc.MaxTimeout}, {"hedge_delay", mc.HedgeDelay}} {
		if d.v < 0 {
			return fmt.Errorf("%s (%s): %s: %v is negative", key, mc.Name, d.key, d.v)
		}
	}
	if mc.Timeout > 0 {
		m.timeout = mc.Timeout
		if m.maxTimeout == 0 {
			m.maxTimeout = max(mc.Timeout, r.MaxTimeout)
		}
	}
	if mc.MaxTimeout > 0 {
		m.maxTimeout = mc.MaxTimeout
	}
	if m.timeout > m.maxTimeout && m.maxTimeout > 0 {
		return fmt.Errorf("%s (%s): timeout %v is longer than max_timeout %v", key, mc.Name, m.timeout, m.maxTimeout)
	}
	if mc.HedgeDelay > 0 {
		if !m.hedge {
			return fmt.Errorf("%s (%s): hedge_delay: the method is not side-effect-free (its proto says no idempotency_level, and idempotent does not list it), so it is never hedged", key, mc.Name)
		}
		m.fixedDelay = mc.HedgeDelay
	}
	if mc.NoHedge {
		m.hedge = false
	}
	return nil
}

// serviceConfig is grpc-go's service config of the remote: the balancer
// and retries of idempotent methods under
// retry throttling, grpc-go's retry budget.
func (r *remote) serviceConfig() string {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method,omitempty"`
	}
	type retryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
	type methodConfig struct {
		Name        []name       `json:"name"`
		RetryPolicy *retryPolicy `json:"retryPolicy,omitempty"`
	}
	// Idempotent methods are sent again when an endpoint is unavailable;
	// side-effect-free ones also when it fails with internal, as a sick
	// replica does until outlier detection ejects it.
	var idempotent, pure []name
	for _, m := range r.methods {
		n := name{Service: r.Service, Method: string(m.desc.Name())}
		switch {
		case m.sideEffectFree():
			pure = append(pure, n)
		case m.idempotent:
			idempotent = append(idempotent, n)
		}
	}
	byMethod := func(a, b name) int { return strings.Compare(a.Method, b.Method) }
	slices.SortFunc(idempotent, byMethod)
	slices.SortFunc(pure, byMethod)
	cfg := map[string]any{
		"loadBalancingConfig": []map[string]any{{balancerName: map[string]any{}}},
		// grpc-go's retry throttling: each failed call spends a token,
		// each success earns RetryBudget×10 back, and retries stop while
		// fewer than half are left. 100 tokens let the calls in flight on
		// a replica that dies at once be sent again (with 10, eight calls
		// cut together stopped retries); the retry budget bounds the
		// attempts they add.
		"retryThrottling": map[string]float64{"maxTokens": 100, "tokenRatio": r.RetryBudget * 10},
	}
	var methods []methodConfig
	for _, mc := range []struct {
		names []name
		codes []string
	}{{idempotent, []string{"UNAVAILABLE"}}, {pure, []string{"UNAVAILABLE", "INTERNAL"}}} {
		if len(mc.names) == 0 {
			continue
		}
		methods = append(methods, methodConfig{Name: mc.names, RetryPolicy: &retryPolicy{
			MaxAttempts: 3, InitialBackoff: "0.01s", MaxBackoff: "0.2s", BackoffMultiplier: 2,
			RetryableStatusCodes: mc.codes,
		}})
	}
	if len(methods) > 0 {
		cfg["methodConfig"] = methods
	}
	b, _ := json.Marshal(cfg)
	return string(b)
}

func (r Remote) tlsConfig() (*tls.Config, error) {
	if r.CAFile == "" {
		if r.CertFile != "" || r.KeyFile != "" || r.ServerName != "" {
			return nil, errors.New("cert_file, key_file and server_name need ca_file (TLS)")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %q: no PEM certificate in it", r.CAFile)
	}
	c := &tls.Config{RootCAs: pool, ServerName: r.ServerName, MinVersion: tls.VersionTLS12}
	if r.CertFile != "" || r.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// run connects to the endpoints now, not at the first call, and closes the
// connections when ctx ends.
func (r *remote) run(ctx context.Context) {
	_, _ = r.conn()
	<-ctx.Done()
	r.close()
}

func (r *remote) exposedOn(listener string) bool { return slices.Contains(r.Expose, listener) }

// deadline applies the method's maximum deadline to a call, and its
// default one unless withDefault is false.
func (m *remoteMethod) deadline(ctx context.Context, withDefault bool) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	switch {
	case !ok && withDefault && m.timeout > 0:
		return context.WithTimeout(ctx, m.timeout)
	case ok && m.maxTimeout > 0 && time.Until(d) > m.maxTimeout:
		return context.WithTimeout(ctx, m.maxTimeout)
	}
	return ctx, func() {}
}

// sideEffectFree tells a NO_SIDE_EFFECTS method.
func (m *remoteMethod) sideEffectFree() bool {
	o, ok := m.desc.Options().(*descriptorpb.MethodOptions)
	return ok && o.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// hedgeDelay is the configured delay, or the recent 95th percentile.
func (m *remoteMethod) hedgeDelay() time.Duration {
	if m.fixedDelay > 0 {
		return m.fixedDelay
	}
	if p := m.latency.p95(); p > 0 {
		return p
	}
	return defaultHedgeDelay
}

// Do serves a call of the client Server.Client gives for the remote
// service: a unary Connect call goes straight to grpc-go; the others go
// through the bridge, served in this process without the server's
// interceptors.
func (r *remote) Do(req *http.Request) (*http.Response, error) {
	if res, done := r.callUnary(req); done {
		return res, nil
	}
	return inProcessClient{env: r.env, service: r.Service}.serve(r.inProcessRoute(req.URL.Path), req)
}

// inProcessRoute is how Server.Client serves a call of the remote service: through
// the bridge, in-process, without the server's interceptors.
func (r *remote) inProcessRoute(path string) inProcessRoute {
	if h, ok := r.client[path]; ok {
		md := r.methods[path].desc
		return inProcessRoute{h: h, unary: !md.IsStreamingClient() && !md.IsStreamingServer()}
	}
	return inProcessRoute{h: unknownProcedureHandler{listener: "remote " + r.Name}}
}
