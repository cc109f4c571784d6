package goms

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// DefaultResolveInterval is how often the names of Remote.Targets are
// resolved again when Remote.ResolveInterval is zero.
const DefaultResolveInterval = 30 * time.Second

// Remote says where a service this process does not mount runs, so that
// Server.Client reaches it over the network.
type Remote struct {
	// Name identifies the remote in configuration keys
	// (remotes.NAME.targets) and errors.
	Name string `yaml:"name"`
	// Service is the fully-qualified protobuf service name, such as
	// goms.v1.GoMsService.
	Service string `yaml:"service"`
	// Targets are the service's endpoints as "host:port" (or
	// "dns:///host:port"). A host name stands for every address it
	// resolves to, as a Kubernetes headless Service does, and is resolved
	// again every ResolveInterval.
	Targets []string `yaml:"targets"`
	// ResolveInterval is how often names are resolved again. Default
	// DefaultResolveInterval (30s).
	ResolveInterval time.Duration `yaml:"resolve_interval"`
	// Idempotent lists methods (by name, such as "Get") that may be sent
	// again after a failure that may have reached a server. Methods whose
	// proto says idempotency_level = NO_SIDE_EFFECTS or IDEMPOTENT are
	// idempotent already. Calls that never reached a server are retried
	// once on another endpoint whatever their method.
	Idempotent []string `yaml:"idempotent"`
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
	// mounted here, forwarding each call, in the protocol it came in, to
	// an endpoint, with streaming and trailers intact: an edge. Its
	// endpoints must accept those protocols (gateway mode does). Empty
	// means the service is only called through Server.Client.
	Expose []string `yaml:"expose"`
}

// remote is a configured Remote at run time: its endpoints, the transport
// that connects to them, and the balancer that picks one per call.
type remote struct {
	Remote
	s          *Server
	transport  *http.Transport
	scheme     string
	idempotent map[string]bool // procedures

	// initial is the first resolution, by run or by the first call,
	// whichever comes first.
	initial sync.Once

	mu        sync.Mutex
	endpoints []*endpoint
	resolved  map[string][]string // target -> addresses, kept when a lookup fails
	lastErr   error
}

// endpoint is one address of a remote, with its connection.
type endpoint struct {
	addr     string
	inFlight atomic.Int64

	mu      sync.Mutex
	cc      *http.ClientConn
	dialing chan struct{} // closed when the dial in progress ends
	gone    bool          // removed by resolution or closed
	retryAt time.Time     // ejected until then
	backoff time.Duration
	err     error
}

const (
	minBackoff  = 250 * time.Millisecond
	maxBackoff  = 5 * time.Second
	dialTimeout = 5 * time.Second
)

func newRemote(s *Server, r Remote) (*remote, error) {
	if r.Name == "" {
		return nil, fmt.Errorf("goms: remote for %q: name must not be empty", r.Service)
	}
	if !protoreflect.FullName(r.Service).IsValid() {
		return nil, fmt.Errorf("goms: remote %q: service %q is not a fully-qualified protobuf service name", r.Name, r.Service)
	}
	if len(r.Targets) == 0 {
		return nil, fmt.Errorf("goms: remote %q: targets: need at least one host:port", r.Name)
	}
	for _, t := range r.Targets {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(t, "dns:///")); err != nil {
			return nil, fmt.Errorf("goms: remote %q: target %q: %w", r.Name, t, err)
		}
	}
	if r.ResolveInterval < 0 {
		return nil, fmt.Errorf("goms: remote %q: resolve_interval: %v is negative", r.Name, r.ResolveInterval)
	}
	if r.ResolveInterval == 0 {
		r.ResolveInterval = DefaultResolveInterval
	}
	rt := &remote{Remote: r, s: s, scheme: "http", idempotent: make(map[string]bool), resolved: make(map[string][]string)}
	var protocols http.Protocols
	rt.transport = &http.Transport{
		DialContext: (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		Protocols:   &protocols,
		// Pings find connections whose peer vanished without a word.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second},
	}
	tlsConfig, err := r.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("goms: remote %q: %w", r.Name, err)
	}
	if tlsConfig != nil {
		protocols.SetHTTP2(true)
		rt.transport.TLSClientConfig = tlsConfig
		rt.scheme = "https"
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(r.Service)); err == nil {
		if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
			for i := range sd.Methods().Len() {
				m := sd.Methods().Get(i)
				if opts, ok := m.Options().(*descriptorpb.MethodOptions); ok && opts.GetIdempotencyLevel() != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN {
					rt.idempotent["/"+r.Service+"/"+string(m.Name())] = true
				}
			}
		}
	}
	for _, m := range r.Idempotent {
		rt.idempotent["/"+r.Service+"/"+m] = true
	}
	return rt, nil
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

// run resolves the targets now and every ResolveInterval, and dials new
// endpoints at once, until ctx ends; then it closes the connections.
func (r *remote) run(ctx context.Context) {
	r.initial.Do(func() { r.resolve(ctx) })
	t := time.NewTicker(r.ResolveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.closeAll()
			return
		case <-t.C:
			r.resolve(ctx)
		}
	}
}

// resolve updates the endpoints from the targets; a name that fails to
// resolve keeps its previous addresses.
func (r *remote) resolve(ctx context.Context) {
	var addrs []string
	for _, target := range r.Targets {
		host, port, _ := net.SplitHostPort(strings.TrimPrefix(target, "dns:///"))
		if net.ParseIP(host) != nil {
			addrs = append(addrs, net.JoinHostPort(host, port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, dialTimeout)
		ips, err := net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		r.mu.Lock()
		if err != nil {
			r.s.logger.Warn("goms: resolving remote target", "remote", r.Name, "target", target, "err", err)
			addrs = append(addrs, r.resolved[target]...)
			r.mu.Unlock()
			continue
		}
		var resolved []string
		for _, ip := range ips {
			resolved = append(resolved, net.JoinHostPort(ip, port))
		}
		r.resolved[target] = resolved
		r.mu.Unlock()
		addrs = append(addrs, resolved...)
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)

	r.mu.Lock()
	var kept, added, removed []*endpoint
	for _, ep := range r.endpoints {
		if slices.Contains(addrs, ep.addr) {
			kept = append(kept, ep)
		} else {
			removed = append(removed, ep)
		}
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(kept, func(ep *endpoint) bool { return ep.addr == a }) {
			ep := &endpoint{addr: a}
			kept = append(kept, ep)
			added = append(added, ep)
		}
	}
	r.endpoints = kept
	r.mu.Unlock()
	for _, ep := range removed {
		ep.close()
	}
	for _, ep := range added {
		go func() { _, _ = ep.conn(ctx, r, true) }() // connect now, not at the first call
	}
}

func (r *remote) closeAll() {
	r.mu.Lock()
	eps := r.endpoints
	r.mu.Unlock()
	for _, ep := range eps {
		ep.close()
	}
}

// errDialing reports an endpoint whose connection another call is dialling.
var errDialing = errors.New("goms: endpoint being dialled")

// errEndpointGone reports an endpoint that resolution removed.
var errEndpointGone = errors.New("goms: endpoint removed")

// conn returns the endpoint's connection, dialling it if needed. The lock
// is not held while dialling: a dial to a vanished host takes up to
// dialTimeout, and picks must go on meanwhile. While one call dials, others
// get errDialing at once, or with wait, the dial's outcome. A failed dial
// ejects the endpoint for a backoff that doubles up to maxBackoff.
func (ep *endpoint) conn(ctx context.Context, r *remote, wait bool) (*http.ClientConn, error) {
	ep.mu.Lock()
	for {
		if ep.cc != nil && ep.cc.Err() == nil {
			cc := ep.cc
			ep.mu.Unlock()
			return cc, nil
		}
		if ep.cc != nil {
			_ = ep.cc.Close()
			ep.cc = nil
		}
		if ep.gone {
			ep.mu.Unlock()
			return nil, errEndpointGone
		}
		if ep.dialing == nil {
			break
		}
		if !wait {
			ep.mu.Unlock()
			return nil, errDialing
		}
		done := ep.dialing
		ep.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ep.mu.Lock()
	}
	if time.Now().Before(ep.retryAt) {
		err := ep.err
		ep.mu.Unlock()
		return nil, err
	}
	done := make(chan struct{})
	ep.dialing = done
	ep.mu.Unlock()

	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dialTimeout)
	cc, err := r.transport.NewClientConn(dctx, r.scheme, ep.addr)
	cancel()

	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.dialing = nil
	close(done)
	if ep.gone {
		if cc != nil {
			_ = cc.Close()
		}
		return nil, errEndpointGone
	}
	if err != nil {
		ep.backoff = min(max(2*ep.backoff, minBackoff), maxBackoff)
		ep.retryAt = time.Now().Add(ep.backoff)
		ep.err = err
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		return nil, err
	}
	ep.cc, ep.backoff, ep.err, ep.retryAt = cc, 0, nil, time.Time{}
	return cc, nil
}

// ready reports whether the endpoint may be picked: connected, or due for
// another dial.
func (ep *endpoint) ready(now time.Time) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.cc != nil && ep.cc.Err() == nil || !now.Before(ep.retryAt)
}

// eject keeps the endpoint out of picks for a backoff after a failure on
// its connection.
func (ep *endpoint) eject(err error) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.cc != nil {
		_ = ep.cc.Close()
		ep.cc = nil
	}
	ep.backoff = min(max(2*ep.backoff, minBackoff), maxBackoff)
	ep.retryAt = time.Now().Add(ep.backoff)
	ep.err = err
}

func (ep *endpoint) close() {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.gone = true
	if ep.cc != nil {
		_ = ep.cc.Close()
		ep.cc = nil
	}
}

// pick chooses an endpoint by the power of two choices on calls in
// flight, among the ready endpoints not yet tried.
func (r *remote) pick(tried []*endpoint) *endpoint {
	r.mu.Lock()
	eps := r.endpoints
	r.mu.Unlock()
	now := time.Now()
	var ready []*endpoint
	for _, ep := range eps {
		if !slices.Contains(tried, ep) && ep.ready(now) {
			ready = append(ready, ep)
		}
	}
	switch len(ready) {
	case 0:
		return nil
	case 1:
		return ready[0]
	}
	i := rand.IntN(len(ready))
	j := rand.IntN(len(ready) - 1)
	if j >= i {
		j++
	}
	a, b := ready[i], ready[j]
	if b.inFlight.Load() < a.inFlight.Load() {
		return b
	}
	return a
}

func (r *remote) exposedOn(listener string) bool { return slices.Contains(r.Expose, listener) }

// exposeRemotes mounts the edge proxy of each remote on the listeners it
// names. Called with s.mu held.
func (s *Server) exposeRemotes() error {
	for _, r := range s.remotes {
		if len(r.Expose) == 0 {
			continue
		}
		path, proxy := "/"+r.Service+"/", r.proxy()
		for _, name := range r.Expose {
			l := s.listener(name)
			if l == nil {
				return fmt.Errorf("goms: remote %q: expose: unknown listener %q (have %s)", r.Name, name, s.listenerNames())
			}
			if l.routes.has(path) {
				return fmt.Errorf("goms: remote %q: expose: %s is already mounted on listener %q", r.Name, r.Service, name)
			}
			l.routes.add(path, r.Service, proxy)
		}
	}
	return nil
}

// proxy forwards the calls a listener receives for the remote service to
// its endpoints. httputil.ReverseProxy keeps the body streaming both ways
// (responses of unknown length are flushed as they come) and copies the
// trailers; the balancing, failover and errors are those of
// Server.Client's remote calls.
func (r *remote) proxy() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = r.scheme
			pr.Out.URL.Host = r.Service
			pr.Out.Host = pr.In.Host
		},
		Transport: roundTripper(remoteClient{r: r}.Do),
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			ce := asConnectError(err)
			if ce == nil {
				ce = connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s (remote %q): %w", r.Service, r.Name, err))
			}
			writeError(w, req, ce)
		},
		ErrorLog: slog.NewLogLogger(r.s.logger.Handler(), slog.LevelDebug),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Body != nil && req.Body != http.NoBody {
			req = req.WithContext(context.WithValue(req.Context(), proxiedKey{}, req))
		}
		rp.ServeHTTP(w, req)
	})
}

// proxiedKey is the context key of the request an edge proxies, when it
// has a body: the request ReverseProxy hands the transport is another one,
// and the body it carries does nothing on Close.
type proxiedKey struct{}

// inboundBody returns what a call an edge proxies needs of the client's
// request body once the remote has answered: whether to wait for the body
// to be sent before relaying the answer, and the body to close with it.
//
// An HTTP/1.1 client sends its whole body before it reads, and net/http's
// HTTP/1.1 server discards what is left of it once the response headers go
// out, under the transport still copying it upstream: the copy would end
// short of its Content-Length, and that error would cut the answer being
// relayed. So the answer waits for the body to be sent.
//
// Over HTTP/2 the transport's response Close waits for the body's copy to
// end. When the remote ends a bidi stream early (a first message over its
// limit) while the client keeps its half open, the copy would wait for the
// client for ever: the body is closed with the answer.
func inboundBody(ctx context.Context) (waitSent bool, closeWith io.Closer) {
	in, _ := ctx.Value(proxiedKey{}).(*http.Request)
	switch {
	case in == nil:
		return false, nil
	case in.ProtoMajor == 1:
		return true, nil
	default:
		return false, in.Body
	}
}

// roundTripper adapts a Do function to http.RoundTripper.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// remoteClient sends the calls of Server.Client to a remote service.
type remoteClient struct{ r *remote }

func (c remoteClient) Do(req *http.Request) (*http.Response, error) {
	r := c.r
	body := newTrackedBody(req.Body)
	if req.Body == nil {
		body.ReadCloser = http.NoBody
	}
	idempotent := r.idempotent[req.URL.Path]
	if idempotent {
		body.keep = maxReplay // to send it again if the call fails
	}
	r.initial.Do(func() { r.resolve(req.Context()) })
	var tried []*endpoint
	var lastErr error
	var dialing *endpoint // skipped while another call dials it
	for attempt := 0; attempt < 2; {
		ep, wait := r.pick(tried), false
		if ep == nil {
			if dialing == nil {
				break
			}
			// Nothing else to try: wait for that dial.
			ep, wait, dialing = dialing, true, nil
		}
		tried = append(tried, ep)
		cc, err := ep.conn(req.Context(), r, wait)
		if errors.Is(err, errDialing) {
			dialing = ep
			continue
		}
		attempt++
		if err != nil {
			lastErr = err // never sent: try another endpoint
			continue
		}
		out := req.Clone(req.Context())
		out.URL.Scheme = r.scheme
		out.URL.Host = ep.addr
		out.Host = r.Service
		out.Body = body
		if req.Body == nil {
			out.Body = nil
		}
		ep.inFlight.Add(1)
		res, err := cc.RoundTrip(out)
		if err == nil {
			body.finish(false)
			waitSent, inbound := inboundBody(req.Context())
			if waitSent {
				select {
				case <-body.sent:
				case <-req.Context().Done():
				}
			}
			res.Body = &endpointBody{ReadCloser: res.Body, ep: ep, inbound: inbound}
			return res, nil
		}
		ep.inFlight.Add(-1)
		lastErr = err
		if req.Context().Err() != nil {
			body.finish(true)
			return nil, err
		}
		if cc.Err() != nil {
			ep.eject(err)
		}
		switch {
		case !body.read.Load():
			// The body was never read: the server cannot have run the
			// call, so it goes to another endpoint as it is.
		case idempotent && body.replayable():
			// It may have reached the server, but sending it again is
			// harmless.
			body = body.replay()
		default:
			body.finish(true)
			return nil, err
		}
	}
	r.mu.Lock()
	if lastErr == nil {
		lastErr = r.lastErr
	}
	n := len(r.endpoints)
	r.mu.Unlock()
	body.finish(true)
	return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf(
		"goms: service %s (remote %q): no reachable endpoint among %d (targets %s): %v",
		r.Service, r.Name, n, strings.Join(r.Targets, ", "), lastErr))
}

// maxReplay bounds the request bytes kept to send an idempotent call
// again: unary requests fit, long streams do not and are not replayed.
const maxReplay = 1 << 20

// trackedBody records whether the transport read the request body, which
// tells a call that never reached a server from one that may have, and
// keeps up to keep bytes of it to send it again.
type trackedBody struct {
	io.ReadCloser
	read     atomic.Bool
	keep     int
	mu       sync.Mutex
	kept     []byte
	overflow bool
	// closeAsked and final decide when the original body closes.
	closeAsked, final bool
	// sent is closed once the transport has read the body to its end,
	// failed to, or closed it.
	sent     chan struct{}
	sentOnce sync.Once
}

func newTrackedBody(rc io.ReadCloser) *trackedBody {
	return &trackedBody{ReadCloser: rc, sent: make(chan struct{})}
}

func (b *trackedBody) markSent() { b.sentOnce.Do(func() { close(b.sent) }) }

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.markSent()
	}
	if b.keep > 0 && n > 0 {
		b.mu.Lock()
		if len(b.kept)+n <= b.keep {
			b.kept = append(b.kept, p[:n]...)
		} else {
			b.overflow = true
		}
		b.mu.Unlock()
	}
	return n, err
}

// Close closes the original body only once the attempt is known to be the
// last: a failed attempt's transport closing it must not end what a retry
// still has to send.
func (b *trackedBody) Close() error {
	b.markSent()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeAsked = true
	if b.final {
		return b.ReadCloser.Close()
	}
	return nil
}

// finish marks the attempt as the last: a close already asked for happens
// now, later ones go through.
func (b *trackedBody) finish(closeNow bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.final = true
	if b.closeAsked || closeNow {
		_ = b.ReadCloser.Close()
	}
}

func (b *trackedBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keep > 0 && !b.overflow
}

// replay returns a body that sends the bytes already read again, then the
// rest of the original.
func (b *trackedBody) replay() *trackedBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := b.ReadCloser
	r := newTrackedBody(struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(slices.Clone(b.kept)), rest), rest})
	r.keep = b.keep
	return r
}

// endpointBody counts a call in flight on its endpoint until its response
// body is closed or read to the end.
type endpointBody struct {
	io.ReadCloser
	ep *endpoint
	// inbound, for a call an edge proxies over HTTP/2, is the client's
	// request body, closed with the response.
	inbound io.Closer
	once    sync.Once
}

func (b *endpointBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done()
	}
	return n, err
}

func (b *endpointBody) Close() error {
	b.done()
	if b.inbound != nil {
		_ = b.inbound.Close()
	}
	return b.ReadCloser.Close()
}

func (b *endpointBody) done() { b.once.Do(func() { b.ep.inFlight.Add(-1) }) }
