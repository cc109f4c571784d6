package goms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// Mode says which RPC protocols a listener accepts.
type Mode string

const (
	// ModeGRPC accepts gRPC only.
	ModeGRPC Mode = "grpc"
	// ModeHTTP accepts the Connect protocol (JSON and binary, unary GET
	// requests included) and gRPC-Web, the protocols browsers and curl use.
	ModeHTTP Mode = "http"
	// ModeGateway accepts gRPC, gRPC-Web and Connect.
	ModeGateway Mode = "gateway"
)

// accepts reports whether the mode lets requests of protocol p through to
// the handlers. Requests whose protocol is unknown are passed on by the
// modes that speak Connect, whose handlers answer them with 415 and the
// content types they accept.
func (m Mode) accepts(p protocol) bool {
	switch m {
	case ModeGRPC:
		return p == protocolGRPC
	case ModeHTTP:
		return p != protocolGRPC
	default:
		return true
	}
}

// protocols names the protocols a mode accepts, for error messages.
func (m Mode) protocols() string {
	switch m {
	case ModeGRPC:
		return "gRPC only"
	case ModeHTTP:
		return "Connect and gRPC-Web only"
	default:
		return "gRPC, gRPC-Web and Connect"
	}
}

// Engine is the HTTP/2 implementation that serves a listener's gRPC
// connections. The handlers, routes and interceptors are the same with
// either engine; only the speed differs.
type Engine string

// Listener describes one address goms listens on. The zero Mode is
// ModeGateway.
type Listener struct {
	// Name identifies the listener in MountOn, in logs and in errors. It
	// must be unique and not empty.
	Name string `yaml:"name"`
	// Addr is the TCP address, "host:port". Port 0 picks a free port; the
	// chosen address is then available from Server.Addr after Listen.
	Addr string `yaml:"address"`
	// Mode says which protocols the listener accepts. The default is
	// ModeGateway.
	Mode Mode `yaml:"mode"`
	// Engine serves the listener's gRPC connections. The default is
	// EngineGRPC for grpc-mode listeners and EngineNetHTTP, the only
	// choice, for the others.
	Engine Engine `yaml:"engine"`
	// CertFile and KeyFile name PEM files holding a certificate and its
	// key. When set, the listener speaks TLS (HTTP/1.1 and HTTP/2 through
	// ALPN) instead of cleartext HTTP/1.1 and h2c.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MaxInFlight bounds the calls the listener runs at once, streams
	// included, whatever their priority: a call beyond it fails at once
	// with CodeUnavailable, which clients retry elsewhere, instead of
	// queuing without bound. Health checks and reflection are not
	// counted. 0, the default, means no limit but AdaptiveLimit.
	MaxInFlight int `yaml:"max_in_flight"`
	// AdaptiveLimit bounds the unary calls the listener runs at once with
	// a limit that follows their latency. On by default.
	AdaptiveLimit AdaptiveLimit `yaml:"adaptive_limit"`
	// ClientCAFile names a PEM file of the certificate authorities that
	// sign client certificates. When set, the listener requires mutual
	// TLS: callers without a certificate those authorities signed are
	// refused during the handshake, and the certificate's holder is the
	// caller's Identity (see Auth). Needs CertFile and KeyFile or
	// TLSConfig.
	ClientCAFile string `yaml:"client_ca_file"`
	// TLSConfig is the code-only alternative to CertFile and KeyFile. It
	// must hold at least one certificate (or GetCertificate); goms clones
	// it and sets NextProtos.
	TLSConfig *tls.Config `yaml:"-"`
	// CORS lets pages of the listed origins call the listener from a
	// browser. Off by default; not for grpc-mode listeners, which no
	// browser can call.
	CORS CORS `yaml:"cors"`
	// REST serves, next to the RPC procedures, the REST routes that
	// google.api.http annotations give the methods of the mounted
	// services ("GET /goms/{id}" calls goms.v1.GoMsService/Get), through
	// connectrpc.com/vanguard and the same handlers and interceptors.
	// Errors have the HTTP status of their code and a JSON
	// google.rpc.Status body. Plain routes and RPC procedures come
	// first, and gRPC and gRPC-Web requests never reach REST routes.
	// Listen fails when no service mounted on the listener has such
	// annotations. Off by default; not for grpc-mode listeners.
	REST bool `yaml:"rest"`
	// MinBodyRate is the slowest, in bytes per second, that a request
	// body may arrive once MinBodyRateGrace has passed, so that
	// connections sending their bodies a few bytes at a time cannot pile
	// up. The clock runs only while the server is owed bytes: from the
	// first read of a unary body to its end, and in a stream from the
	// first byte of a message to its last, never between whole messages,
	// so a stream idle between messages (a bidi call waiting for its
	// user) is not cut. On net/http a call that falls behind ends with
	// CodeDeadlineExceeded (CodeResourceExhausted when the message was
	// over the size limit and being skipped) in its protocol, and its
	// HTTP/1.1 connection is closed after the answer; on the grpc engine
	// it ends with CodeDeadlineExceeded and its connection is closed after
	// the answer. 0, the default, means 240 bytes per second, as Kestrel;
	// a negative value turns the limit off.
	MinBodyRate int `yaml:"min_body_rate"`
	// MinBodyRateGrace is how long a request body may take before
	// MinBodyRate applies to it. The default is 5s.
	MinBodyRateGrace time.Duration `yaml:"min_body_rate_grace"`
	// OpenAPI serves, at /openapi.json, an OpenAPI 3.1
	// document of the unary procedures mounted on the listener (and of
	// their REST routes when REST is on), built when the server starts,
	// and at /docs a page that lists them and calls them. Off
	// by default; not for grpc-mode listeners.
	OpenAPI bool `yaml:"openapi"`
}

// Defaults of the Listener fields whose zero value means a default, as
// their docs state.
const (
	defaultMinBodyRate      = 240
	defaultMinBodyRateGrace = 5 * time.Second
)

// check validates the listener and returns it with its defaults applied,
// along with the TLS configuration it serves with, if any.
func (l Listener) check() (Listener, *tls.Config, error) {
	if l.Name == "" {
		return l, nil, fmt.Errorf("goms: listener with address %q: name must not be empty", l.Addr)
	}
	switch l.Mode {
	case "":
		l.Mode = ModeGateway
	case ModeGRPC, ModeHTTP, ModeGateway:
	default:
		return l, nil, fmt.Errorf("goms: listener %q: mode %q: want %q, %q or %q", l.Name, l.Mode, ModeGRPC, ModeHTTP, ModeGateway)
	}
	switch l.Engine {
	case "":
		l.Engine = EngineNetHTTP
		if l.Mode == ModeGRPC {
			l.Engine = EngineGRPC
		}
	case EngineNetHTTP:
	case EngineGRPC:
		if l.Mode != ModeGRPC {
			return l, nil, fmt.Errorf("goms: listener %q: engine %q serves grpc-mode listeners only, not mode %q", l.Name, l.Engine, l.Mode)
		}
	default:
		return l, nil, fmt.Errorf("goms: listener %q: engine %q: want %q or %q", l.Name, l.Engine, EngineNetHTTP, EngineGRPC)
	}
	if l.MaxInFlight < 0 {
		return l, nil, fmt.Errorf("goms: listener %q: max_in_flight: %d is negative", l.Name, l.MaxInFlight)
	}
	if l.MinBodyRateGrace < 0 {
		return l, nil, fmt.Errorf("goms: listener %q: min_body_rate_grace: %v is negative", l.Name, l.MinBodyRateGrace)
	}
	if l.MinBodyRate == 0 {
		l.MinBodyRate = defaultMinBodyRate
	}
	if l.MinBodyRateGrace == 0 {
		l.MinBodyRateGrace = defaultMinBodyRateGrace
	}
	adaptive, err := l.AdaptiveLimit.check()
	if err != nil {
		return l, nil, fmt.Errorf("goms: listener %q: %w", l.Name, err)
	}
	l.AdaptiveLimit = adaptive
	if l.Mode == ModeGRPC && (l.REST || l.OpenAPI || len(l.CORS.AllowedOrigins) > 0) {
		return l, nil, fmt.Errorf("goms: listener %q: rest, openapi and cors need mode %q or %q: mode %q serves gRPC only", l.Name, ModeHTTP, ModeGateway, l.Mode)
	}
	cors, err := l.CORS.check()
	if err != nil {
		return l, nil, fmt.Errorf("goms: listener %q: %w", l.Name, err)
	}
	l.CORS = cors
	if err := checkAddr(l.Addr); err != nil {
		return l, nil, fmt.Errorf("goms: listener %q: address %q: %w", l.Name, l.Addr, err)
	}
	tlsConfig, err := l.tlsConfig()
	if err != nil {
		return l, nil, fmt.Errorf("goms: listener %q: %w", l.Name, err)
	}
	return l, tlsConfig, nil
}

func checkAddr(addr string) error {
	if addr == "" {
		return fmt.Errorf("must not be empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func (l Listener) tlsConfig() (*tls.Config, error) {
	c, err := l.serverTLSConfig()
	if err != nil || l.ClientCAFile == "" {
		return c, err
	}
	if c == nil {
		return nil, fmt.Errorf("client_ca_file %q needs TLS: set cert_file and key_file", l.ClientCAFile)
	}
	pem, err := os.ReadFile(l.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client_ca_file %q: no PEM certificate in it", l.ClientCAFile)
	}
	c.ClientCAs = pool
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

func (l Listener) serverTLSConfig() (*tls.Config, error) {
	files := l.CertFile != "" || l.KeyFile != ""
	switch {
	case files && l.TLSConfig != nil:
		return nil, fmt.Errorf("set either cert_file and key_file or TLSConfig, not both")
	case files && (l.CertFile == "" || l.KeyFile == ""):
		return nil, fmt.Errorf("cert_file and key_file go together: got cert_file %q, key_file %q", l.CertFile, l.KeyFile)
	case files:
		cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading TLS certificate: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	case l.TLSConfig != nil:
		c := l.TLSConfig.Clone()
		if len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
			return nil, fmt.Errorf("TLSConfig has no certificate")
		}
		return c, nil
	default:
		return nil, nil
	}
}

// listener is a configured Listener at run time: its routes, its HTTP
// server and, once bound, its net.Listener.
type listener struct {
	Listener
	tlsConfig *tls.Config
	mux       mux
	http      *http.Server // nil with the grpc engine, which has its own
	grpc      *grpcEngine  // nil unless Engine is EngineGRPC
	// workers run the net/http server's HTTP/2 requests.
	workers *workers
	admin   bool // the admin listener
	ln      net.Listener
	// bound is the address ln is bound to, for readers without the
	// server's lock.
	bound atomic.Pointer[string]
	// conns counts the listener's open connections, for the status page.
	conns atomic.Int64
	// maxHeaderBlock is the most bytes one HTTP/2 header block may hold
	// on the listener's connections.
	maxHeaderBlock int
	// rejections holds the error answered for each protocol the mode
	// excludes, built once.
	rejections [protocolConnect + 1]*connect.Error
	// admission decides which calls run, and until when.
	admission *admission
	// cors answers preflights and adds CORS headers before handle runs;
	// nil unless CORS allows an origin.
	cors http.Handler
	// rest serves the REST routes of the mounted services; nil unless
	// REST is set.
	rest http.Handler
}

func newListener(e env, cfg Listener, tlsConfig *tls.Config, log *admissionLog) *listener {
	l := &listener{Listener: cfg, tlsConfig: tlsConfig, mux: newMux(),
		maxHeaderBlock: e.cfg.MaxHeaderBytes + headerBlockSlack}
	l.admission = newAdmission(cfg.Name, cfg, e.cfg.Interceptors.Rules, log)
	for p := range l.rejections {
		l.rejections[p] = rejection(cfg.Name, cfg.Mode, protocol(p))
	}
	l.cors = cfg.CORS.handler(cfg.REST, http.HandlerFunc(l.handle))
	l.workers = newWorkers()
	if cfg.Engine == EngineGRPC {
		l.grpc = newGRPCEngine(e, l)
	} else {
		l.http = l.newHTTPServer(e)
	}
	return l
}

// serve runs the listener's engine on the bound listener until it is shut
// down.
func (l *listener) serve() error {
	var err error
	if l.grpc != nil {
		err = l.grpc.serve(l.ln)
	} else {
		err = l.http.Serve(guardedListener{
			Listener:       l.ln,
			tlsConfig:      withALPN(l.tlsConfig),
			headerTimeout:  l.http.ReadHeaderTimeout,
			maxHeaderBlock: l.maxHeaderBlock,
		})
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("goms: listener %q: %w", l.Name, err)
}

// shutdown stops accepting, drains the listener's connections and reports
// whether they all finished before ctx ended.
func (l *listener) shutdown(ctx context.Context) bool {
	defer l.workers.close()
	if l.grpc != nil {
		_ = l.ln.Close()
		return l.grpc.shutdown(ctx)
	}
	err := l.http.Shutdown(ctx)
	return !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// close closes the listener and its connections at once.
func (l *listener) close() {
	defer l.workers.close()
	if l.grpc != nil {
		_ = l.ln.Close()
		l.grpc.close()
		return
	}
	_ = l.http.Close()
}

// ServeHTTP routes one request: CORS first, when configured, so that
// preflights never meet the protocol filter; then handle.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if l.cors != nil {
		l.cors.ServeHTTP(w, r)
		return
	}
	l.handle(w, r)
}

// handle serves one request: plain paths first, then the protocol filter
// of the listener's mode, then the mounted procedures and, when REST is
// on, the REST routes for requests that are neither gRPC nor gRPC-Web.
func (l *listener) handle(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if h, ok := l.mux.plain[path]; ok {
		h.ServeHTTP(w, r)
		return
	}
	if r.TLS != nil {
		r = withPeerCertificate(r)
	}
	p := classify(r)
	if p == protocolUnknown && l.Mode == ModeGRPC {
		rejectNonRPC(w, r)
		return
	}
	if !l.Mode.accepts(p) {
		writeError(w, r, l.rejections[p])
		return
	}
	h := l.mux.rpc(path)
	rest := h == nil && l.rest != nil && p != protocolGRPC && p != protocolGRPCWeb
	if rest {
		// REST requests look like Connect (GET, application/json POST)
		// or like nothing (PATCH, DELETE); the transcoder answers the
		// paths it does not know as below.
		h = l.rest
	}
	if h == nil {
		writeError(notFoundWriter{w}, r, unknownProcedure(l.Name, path))
		return
	}
	t, ok := l.admission.admit(w, r, path, p, rest)
	if !ok {
		return
	}
	defer t.leave()
	h.ServeHTTP(w, r)
}

// countingListener counts the connections it accepted that are still
// open: one atomic add when a connection opens and one when it closes,
// nothing per call.
type countingListener struct {
	net.Listener
	open *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

// countedConn takes itself off its listener's count once, at the first
// Close.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side of a TCP connection, which
// drained connections need.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
