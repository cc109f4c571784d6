package goms_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// The helpers that tests of several files share; a helper used by one
// file's tests stays in that file. The helpers that build and run server
// processes are in process_ext_test.go.

// Values and configurations shared by the tests.

// callTimeout bounds the calls of the tests, streams included.
const callTimeout = 10 * time.Second

// unknownID is a well-formed item id that no item has.
const unknownID = "0123456789abcdef"

// allModes is a configuration with one listener of each mode, each named
// after its mode, and a grpc-mode listener served by the grpc engine,
// "grpcgo".
func allModes() goms.Config {
	return goms.Config{Listeners: []goms.Listener{
		{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP},
		{Name: "http", Mode: goms.ModeHTTP},
		{Name: "gateway", Mode: goms.ModeGateway},
		{Name: "grpcgo", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC},
	}}
}

// maxIterations bounds every load loop in count as well as in time.
const maxIterations = 1_000_000

// Clients.

// dialGRPC returns a grpc-go client connection to addr, closed when the
// test ends. The repository generates no grpc-go stubs: calls go through
// Invoke and NewStream with the generated messages.
func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rpcClient calls the test service in one protocol, with connect-go or
// grpc-go.
type rpcClient struct {
	name string
	// create makes an item; requestID, when set, goes in X-Request-Id.
	create func(ctx context.Context, name, requestID string) (*gomsv1.Item, error)
	get    func(ctx context.Context, id string) error
	list   func(ctx context.Context) error
	delete func(ctx context.Context, id string) error
	// watch opens a Watch stream, which ends when ctx does; close
	// releases it once recv has failed.
	watch func(ctx context.Context) (recv func() (*gomsv1.WatchResponse, error), close func(), err error)
}

// connectClient is an rpcClient on connect-go.
func connectClient(name string, hc *http.Client, baseURL string, opts ...connect.ClientOption) *rpcClient {
	c := gomsv1connect.NewGoMsServiceClient(hc, baseURL, opts...)
	return &rpcClient{
		name: name,
		create: func(ctx context.Context, name, requestID string) (*gomsv1.Item, error) {
			req := connect.NewRequest(&gomsv1.CreateRequest{Name: name})
			if requestID != "" {
				req.Header().Set(goms.RequestIDHeader, requestID)
			}
			res, err := c.Create(ctx, req)
			if err != nil {
				return nil, err
			}
			return res.Msg.GetItem(), nil
		},
		get: func(ctx context.Context, id string) error {
			_, err := c.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: id}))
			return err
		},
		list: func(ctx context.Context) error {
			_, err := c.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 5}))
			return err
		},
		delete: func(ctx context.Context, id string) error {
			_, err := c.Delete(ctx, connect.NewRequest(&gomsv1.DeleteRequest{Id: id}))
			return err
		},
		watch: func(ctx context.Context) (func() (*gomsv1.WatchResponse, error), func(), error) {
			stream, err := c.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
			if err != nil {
				return nil, nil, err
			}
			recv := func() (*gomsv1.WatchResponse, error) {
				if stream.Receive() {
					return stream.Msg(), nil
				}
				if err := stream.Err(); err != nil {
					return nil, err
				}
				return nil, io.EOF
			}
			return recv, func() { _ = stream.Close() }, nil
		},
	}
}

// grpcgoClient is an rpcClient on grpc-go, with a connection of its own
// closed at the end of the test.
func grpcgoClient(t *testing.T, name, addr string) *rpcClient {
	conn := dialGRPC(t, addr)
	return &rpcClient{
		name: name,
		create: func(ctx context.Context, name, requestID string) (*gomsv1.Item, error) {
			if requestID != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, goms.RequestIDHeader, requestID)
			}
			res := new(gomsv1.CreateResponse)
			if err := conn.Invoke(ctx, gomsv1connect.GoMsServiceCreateProcedure, &gomsv1.CreateRequest{Name: name}, res); err != nil {
				return nil, err
			}
			return res.GetItem(), nil
		},
		get: func(ctx context.Context, id string) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: id}, new(gomsv1.GetResponse))
		},
		list: func(ctx context.Context) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceListProcedure, &gomsv1.ListRequest{PageSize: 5}, new(gomsv1.ListResponse))
		},
		delete: func(ctx context.Context, id string) error {
			return conn.Invoke(ctx, gomsv1connect.GoMsServiceDeleteProcedure, &gomsv1.DeleteRequest{Id: id}, new(gomsv1.DeleteResponse))
		},
		watch: func(ctx context.Context) (func() (*gomsv1.WatchResponse, error), func(), error) {
			desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
			stream, err := conn.NewStream(ctx, desc, gomsv1connect.GoMsServiceWatchProcedure)
			if err != nil {
				return nil, nil, err
			}
			if err := stream.SendMsg(&gomsv1.WatchRequest{}); err != nil {
				return nil, nil, err
			}
			if err := stream.CloseSend(); err != nil {
				return nil, nil, err
			}
			recv := func() (*gomsv1.WatchResponse, error) {
				ev := new(gomsv1.WatchResponse)
				if err := stream.RecvMsg(ev); err != nil {
					return nil, err
				}
				return ev, nil
			}
			return recv, func() {}, nil // the stream ends with ctx
		},
	}
}

// restResult is an answer to a REST request: its status and its JSON body.
type restResult struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// str returns the string at a dotted path of the body ("item.name").
func (r restResult) str(path string) string {
	var v any = r.body
	for _, key := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[key]
	}
	s, _ := v.(string)
	return s
}

// rest sends one REST request, as curl would, and decodes the JSON answer.
func rest(t *testing.T, client *http.Client, method, url, body string, header ...string) restResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	r := restResult{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type %q, want JSON; body %q", method, url, ct, raw)
	}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, raw, err)
	}
	return r
}

// wantStatus fails the test unless r has the status and, for errors, a
// message containing msg.
func (r restResult) wantStatus(t *testing.T, what string, status int, msg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.raw)
	}
	if msg != "" && !strings.Contains(r.str("message"), msg) {
		t.Fatalf("%s: message %q does not contain %q; body %s", what, r.str("message"), msg, r.raw)
	}
}

// icProtocol is one protocol the interceptor tests call in, each over the
// HTTP version its clients use most.
type icProtocol struct {
	name string // as connect.Peer.Protocol says it
	h2   bool
	opts []connect.ClientOption
}

var icProtocols = []icProtocol{
	{name: connect.ProtocolConnect},
	{name: connect.ProtocolGRPC, h2: true, opts: []connect.ClientOption{connect.WithGRPC()}},
	{name: connect.ProtocolGRPCWeb, opts: []connect.ClientOption{connect.WithGRPCWeb()}},
}

func (p icProtocol) httpClient(tb testing.TB) *http.Client {
	if p.h2 {
		return gomstest.H2C(tb)
	}
	return gomstest.HTTP1(tb)
}

// gomsClient returns a GoMsService client of the server at baseURL.
func (p icProtocol) gomsClient(tb testing.TB, baseURL string, opts ...connect.ClientOption) gomsv1connect.GoMsServiceClient {
	return gomsv1connect.NewGoMsServiceClient(p.httpClient(tb), baseURL, append(slices.Clone(p.opts), opts...)...)
}

// testPKI holds the PEM files of a test certificate authority, a server
// certificate for 127.0.0.1 and a client certificate.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    tls.Certificate
}

const clientURI = "spiffe://goms.test/client"

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "goms test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
		key := newKey()
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	serverDER, serverKey := issue(2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	uri, _ := url.Parse(clientURI)
	clientDER, clientKey := issue(3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "client-cn"}, URIs: []*url.URL{uri},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	serverKeyDER, _ := x509.MarshalECPrivateKey(serverKey)
	pki := testPKI{
		caFile:   writePEM("ca.pem", "CERTIFICATE", caDER),
		certFile: writePEM("server.pem", "CERTIFICATE", serverDER),
		keyFile:  writePEM("server-key.pem", "EC PRIVATE KEY", serverKeyDER),
		roots:    x509.NewCertPool(),
		client:   tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey},
	}
	pki.roots.AddCert(ca)
	return pki
}

// httpsClient returns an HTTP/2 client over TLS that trusts the test CA
// and presents certs.
func (p testPKI) httpsClient(t *testing.T, h2 bool, certs ...tls.Certificate) *http.Client {
	var protocols http.Protocols
	if h2 {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	tr := &http.Transport{
		Protocols:       &protocols,
		TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: certs, MinVersion: tls.VersionTLS12},
	}
	c := &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// Checks of answers, errors and logs.

// wantStatus fails the test unless err is a gRPC status with code whose
// message contains every one of parts.
func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("got %v, want a gRPC status %v", err, code)
	}
	if st.Code() != code {
		t.Fatalf("got %v: %q, want %v", st.Code(), st.Message(), code)
	}
	for _, part := range parts {
		if !strings.Contains(st.Message(), part) {
			t.Fatalf("message %q does not contain %q", st.Message(), part)
		}
	}
}

// rpcCode returns the code of an error of connect-go or grpc-go.
func rpcCode(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	if st, ok := status.FromError(err); ok {
		return connect.Code(st.Code())
	}
	return connect.CodeUnknown
}

// errorSample keeps the first few distinct errors of a load run.
type errorSample struct {
	mu   sync.Mutex
	n    int
	errs []string
}

func (s *errorSample) add(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if len(s.errs) < 10 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

func (s *errorSample) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *errorSample) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, e := range s.errs {
		fmt.Fprintf(&b, "\n\t%s", e)
	}
	return b.String()
}

// icLog keeps the records a logger writes, for tests to inspect.
type icLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func newICLog() (*icLog, *slog.Logger) {
	l := &icLog{}
	return l, slog.New(l)
}

func (l *icLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *icLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *icLog) WithAttrs([]slog.Attr) slog.Handler { return l }

func (l *icLog) WithGroup(string) slog.Handler { return l }

// find returns the attributes of the records with message msg whose
// attributes include every key and value of match.
func (l *icLog) find(msg string, match map[string]string) []map[string]slog.Value {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range l.records {
		if r.Message != msg {
			continue
		}
		attrs := map[string]slog.Value{"level": slog.StringValue(r.Level.String())}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.Resolve()
			return true
		})
		ok := true
		for k, v := range match {
			if got, found := attrs[k]; !found || got.String() != v {
				ok = false
			}
		}
		if ok {
			out = append(out, attrs)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// answerCode reads the RPC code of an answer: grpc-status for gRPC, the
// trailers frame for gRPC-Web, the end-of-stream frame for Connect
// streams, the JSON error for Connect unary calls.
func answerCode(res *http.Response, body []byte) string {
	grpcCode := func(s string) string {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		switch {
		case err != nil:
			return fmt.Sprintf("grpc-status %q", s)
		case n == 0:
			return "ok"
		}
		return connect.Code(n).String()
	}
	// frames returns the enveloped messages of body whose flags have bit,
	// inflated when their compressed flag is set.
	frames := func(bit byte) [][]byte {
		var out [][]byte
		for b := body; len(b) >= 5; {
			n := int(binary.BigEndian.Uint32(b[1:5]))
			if n > len(b)-5 {
				break
			}
			if msg := b[5 : 5+n]; b[0]&bit != 0 {
				if b[0]&1 != 0 {
					if zr, err := gzip.NewReader(bytes.NewReader(msg)); err == nil {
						msg, _ = io.ReadAll(io.LimitReader(zr, 1<<20))
					}
				}
				out = append(out, msg)
			}
			b = b[5+n:]
		}
		return out
	}
	ct := res.Header.Get("Content-Type")
	switch {
	case res.Header.Get("Grpc-Status") != "":
		return grpcCode(res.Header.Get("Grpc-Status"))
	case strings.HasPrefix(ct, "application/grpc-web"):
		for _, f := range frames(0x80) {
			for line := range strings.Lines(string(f)) {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "grpc-status") {
					return grpcCode(v)
				}
			}
		}
		return "no grpc-status"
	case strings.HasPrefix(ct, "application/grpc"):
		return grpcCode(res.Trailer.Get("Grpc-Status"))
	case strings.HasPrefix(ct, "application/connect+"):
		ends := frames(0x02)
		if len(ends) == 0 {
			return "no end of stream"
		}
		var end struct {
			Error *struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal(ends[0], &end); err != nil {
			return fmt.Sprintf("end of stream %q", ends[0])
		}
		if end.Error == nil {
			return "ok"
		}
		return end.Error.Code
	case res.StatusCode == http.StatusOK:
		return "ok"
	default:
		var e struct{ Code string }
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return e.Code
		}
		return fmt.Sprintf("HTTP %d %q", res.StatusCode, first(body))
	}
}

// Servers and services.

// gatedService answers Get once its gate opens (or at once when the gate
// is nil), and counts the calls that reached it.
type gatedService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	gate    chan struct{}
	entered chan struct{}
}

func (g *gatedService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if g.entered != nil {
		g.entered <- struct{}{}
	}
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

// policyService answers Get after delay, and Create with the time left
// before its deadline (as the item name), or "none".
type policyService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	delay time.Duration
	gets  atomic.Int64
}

func (p *policyService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	p.gets.Add(1)
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

func (p *policyService) Create(ctx context.Context, _ *connect.Request[gomsv1.CreateRequest]) (*connect.Response[gomsv1.CreateResponse], error) {
	left := "none"
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d).Round(100 * time.Millisecond).String()
	}
	return connect.NewResponse(&gomsv1.CreateResponse{Item: &gomsv1.Item{Name: left}}), nil
}

// replicaService answers Get with its own name as the item name, so that
// callers can tell which replica served them.
type replicaService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	name  string
	calls atomic.Int64
}

func (r *replicaService) Get(_ context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	r.calls.Add(1)
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId(), Name: r.name}}), nil
}

// startReplica serves a replicaService on a grpc-mode listener.
func startReplica(t *testing.T, name string) (*replicaService, *gomstest.Running) {
	t.Helper()
	svc := &replicaService{name: name}
	run := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "grpc", Mode: goms.ModeGRPC}}}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
	})
	return svc, run
}

// startExample listens and serves srv in the background; the returned
// function stops it and returns Serve's result.
func startExample(srv *goms.Server) (stop func() error, err error) {
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return func() error {
		cancel()
		return <-done
	}, nil
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// connAttackServer serves the test services on a gateway and a grpc listener.
func connAttackServer(t *testing.T, cfg goms.Config) *gomstest.Running {
	t.Helper()
	if len(cfg.Listeners) == 0 {
		cfg.Listeners = []goms.Listener{{Name: "gateway"}, {Name: "grpc", Mode: goms.ModeGRPC}}
	}
	return gomstest.Start(t, cfg, nil)
}

// Raw connections: HTTP/2 frames written and read by hand.

// dial opens a raw connection to a listener, closed at the end of the
// test.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// awaitClose reads c until the server closes it, answering pings when
// pong is set, and returns how long that took from since. It gives up
// after limit.
func awaitClose(c net.Conn, since time.Time, limit time.Duration, pong bool) (time.Duration, error) {
	if err := c.SetReadDeadline(since.Add(limit)); err != nil {
		return 0, err
	}
	var err error
	if pong {
		err = readFramesAnsweringPings(c)
	} else {
		_, err = io.Copy(io.Discard, c)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, fmt.Errorf("still open after %v", limit)
	}
	return time.Since(since), nil // EOF, or a reset
}

// readFramesAnsweringPings reads HTTP/2 frames from the server and
// answers its pings, as an idle client does, until the connection ends.
func readFramesAnsweringPings(c net.Conn) error {
	fr := http2.NewFramer(c, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			_ = fr.WritePing(true, p.Data)
		}
	}
}

// h2Frames builds the bytes an HTTP/2 client sends.
type h2Frames struct {
	buf bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func newH2Frames() *h2Frames {
	f := &h2Frames{}
	f.fr = http2.NewFramer(&f.buf, nil)
	f.enc = hpack.NewEncoder(&f.hb)
	return f
}

// preface adds the client preface and an empty SETTINGS frame.
func (f *h2Frames) preface() *h2Frames {
	f.buf.WriteString(http2.ClientPreface)
	_ = f.fr.WriteSettings()
	return f
}

// headers adds a HEADERS frame for a request; endHeaders false leaves the
// header block unfinished.
func (f *h2Frames) headers(id uint32, method, path, contentType string, endStream, endHeaders bool) *h2Frames {
	f.hb.Reset()
	fields := []hpack.HeaderField{
		{Name: ":method", Value: method},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "goms.test"},
		{Name: ":path", Value: path},
	}
	if contentType != "" {
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: contentType}, hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	for _, hf := range fields {
		_ = f.enc.WriteField(hf)
	}
	_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: f.hb.Bytes(), EndStream: endStream, EndHeaders: endHeaders})
	return f
}

func (f *h2Frames) data(id uint32, p []byte, endStream bool) *h2Frames {
	_ = f.fr.WriteData(id, endStream, p)
	return f
}

func (f *h2Frames) bytes() []byte { return f.buf.Bytes() }

// envelope frames one message as gRPC, gRPC-Web and Connect streams do.
func envelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// tableSizeUpdates returns n bytes of HPACK dynamic table size updates to
// size 0: header block bytes that decode to no header field.
func tableSizeUpdates(n int) []byte { return bytes.Repeat([]byte{0x20}, n) }

// splitHeaders adds to f a request's header block cut into a HEADERS
// frame and CONTINUATION frames: fill bytes of table size updates, 16 KiB
// a frame, then the fields. endHeaders false leaves the block open.
func (f *h2Frames) splitHeaders(id uint32, fill int, path, contentType string, endHeaders bool) *h2Frames {
	const frame = 16 << 10
	first := true
	write := func(frag []byte, end bool) {
		if first {
			_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndHeaders: end})
			first = false
			return
		}
		_ = f.fr.WriteContinuation(id, end, frag)
	}
	for ; fill > 0; fill -= frame {
		write(tableSizeUpdates(min(fill, frame)), false)
	}
	if !endHeaders {
		return f
	}
	f.hb.Reset()
	for _, hf := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "goms.test"},
		{Name: ":path", Value: path},
		{Name: "content-type", Value: contentType},
		{Name: "te", Value: "trailers"},
	} {
		_ = f.enc.WriteField(hf)
	}
	write(f.hb.Bytes(), true)
	return f
}

// responseFramer reads the frames a server sends on c, decoding their
// header blocks; one per connection, for HPACK's state.
func responseFramer(c net.Conn) *http2.Framer {
	fr := http2.NewFramer(io.Discard, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	return fr
}

// readGRPCStatus reads frames until stream id ends and returns its
// grpc-status.
func readGRPCStatus(fr *http2.Framer, id uint32) (string, error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", err
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id && h.StreamEnded() {
			for _, hf := range h.Fields {
				if hf.Name == "grpc-status" {
					return hf.Value, nil
				}
			}
			return "", fmt.Errorf("stream %d ended without grpc-status", id)
		}
	}
}

// first returns the first line of b, at most 80 bytes of it.
func first(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return b[:min(len(b), 80)]
}

// Figures.

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// memFigures is the heap and the goroutines of the test process.
type memFigures struct {
	heap       int64
	goroutines int
}

func readMem() memFigures {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memFigures{heap: int64(ms.HeapAlloc), goroutines: runtime.NumGoroutine()}
}
