package goms

import (
	"context"
	"crypto/tls"
	"errors"
	"math"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // gzip requests and responses, negotiated as gRPC does
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"
)

// grpcEngine serves a grpc-mode listener: a router splits connections
// between a grpc.Server, whose streams are bridged into the listener's
// handler, and a net/http server for everything else.
type grpcEngine struct {
	l    *listener
	env  env
	http *http.Server
	// tlsConfig is the listener's, with ALPN offering h2 and http/1.1.
	tlsConfig *tls.Config

	// mu guards the fields serve sets, which shutdown and close read.
	mu sync.Mutex
	// grpc is made by serve, not by newGRPCEngine: its stream workers run
	// from grpc.NewServer until it stops, and a server that New made but
	// that never served, or whose New failed, must not leave them behind.
	grpc   *grpc.Server
	grpcLn *chanListener
	httpLn *chanListener
	ended  bool // shutdown or close was called

	stopOnce sync.Once
	stopped  chan struct{} // closed when GracefulStop returns
}

func newGRPCEngine(env env, l *listener) *grpcEngine {
	e := &grpcEngine{l: l, env: env, stopped: make(chan struct{})}
	// The net/http side only ever answers callers in other protocols, so it
	// takes cleartext HTTP/2 even behind TLS: the router has already
	// decrypted the connection.
	e.http = l.newHTTPServer(env)
	e.tlsConfig = withALPN(l.tlsConfig)
	return e
}

// newGRPCServer returns the grpc.Server of the engine, its stream workers
// running.
func (e *grpcEngine) newGRPCServer() *grpc.Server {
	s := e.env
	var timed []grpc.ServerOption
	if e.l.MinBodyRate > 0 {
		// The connections buffer their reads (see guardedConn.timeBodies).
		timed = []grpc.ServerOption{grpc.InTapHandle(e.tap), grpc.ReadBufferSize(0)}
	}
	return grpc.NewServer(append(timed,
		grpc.Creds(bridgeCredentials{}),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(e.handleStream),
		grpc.MaxRecvMsgSize(s.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxConcurrentStreams)),
		grpc.MaxHeaderListSize(uint32(s.cfg.MaxHeaderBytes)),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.cfg.IdleTimeout}),
		// Clients may ping every 10s, with or without calls in flight;
		// grpc-go's default of 5 minutes breaks common client settings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(s.cfg.ReadHeaderTimeout),
		// Calls run on long-lived workers whose stacks have already grown
		// to what the connect call chain needs: a new goroutine per call
		// spent 15% of the engine's CPU growing its stack
		// (docs/performance.md).
		grpc.NumStreamWorkers(streamWorkers()),
	)...)
}

// tap gives each stream of a connection whose request messages are timed
// a context that its clock can end (see bodyClocks).
func (e *grpcEngine) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(bridgeInfo); ok && info.conn != nil && info.conn.bodies != nil {
			return info.conn.bodies.streamContext(ctx), nil
		}
	}
	return ctx, nil
}

// streamWorkers is the number of goroutines that run gRPC calls; calls
// beyond it get a goroutine of their own, as without workers. Few of
// them: grpc-go hands a call to the worker idle longest, and the garbage
// collector halves the stack of a worker that stayed idle through a
// cycle, so each of many workers would grow its stack again at nearly
// every call it takes (a twentieth of a unary call's CPU). A few workers
// are busy often enough to keep theirs.
func streamWorkers() uint32 {
	return uint32(grpcWorkersPerCPU * runtime.GOMAXPROCS(0))
}

// grpcWorkersPerCPU sets the stream workers per GOMAXPROCS.
const grpcWorkersPerCPU = 8

// serve routes the connections of ln until it is closed, and then
// returns http.ErrServerClosed, as net/http's Serve does.
func (e *grpcEngine) serve(ln net.Listener) error {
	e.mu.Lock()
	if e.ended {
		e.mu.Unlock()
		return http.ErrServerClosed
	}
	e.grpc = e.newGRPCServer()
	e.grpcLn = newChanListener(ln.Addr())
	e.httpLn = newChanListener(ln.Addr())
	grpcServer, grpcLn, httpLn := e.grpc, e.grpcLn, e.httpLn
	e.mu.Unlock()
	errc := make(chan error, 2)
	go func() { errc <- grpcServer.Serve(grpcLn) }()
	go func() { errc <- e.http.Serve(httpLn) }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		go e.dispatch(c, time.Now())
	}
}

// dispatch decides where one connection goes. The first request's
// headers are due ReadHeaderTimeout after accepted, for the router and the
// server it hands the connection to together: a connection the router
// gave up on is closed, and the other server's header timeout is cut to
// what is left.
func (e *grpcEngine) dispatch(c net.Conn, accepted time.Time) {
	deadline := accepted.Add(e.env.cfg.ReadHeaderTimeout)
	g := newGuardedConn(c, e.tlsConfig, e.l.maxHeaderBlock)
	if g.tls != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := g.tls.HandshakeContext(ctx)
		cancel()
		if err != nil {
			refusePlainHTTP(err)
			_ = c.Close()
			return
		}
	}
	isGRPC, seen, err := sniff(g, deadline)
	if err != nil || g.tripped.Load() {
		_ = g.Close()
		return
	}
	g.arm(deadline)
	rc := newReplayConn(g, seen, g.tlsState())
	if isGRPC {
		if e.l.MinBodyRate > 0 {
			g.timeBodies(e.l.MinBodyRate, e.l.MinBodyRateGrace)
		}
		e.grpcLn.deliver(rc)
	} else {
		e.httpLn.deliver(rc)
	}
}

// end marks the engine ended, so that serve no longer starts, and returns
// what serve started, if anything.
func (e *grpcEngine) end() (*grpc.Server, *chanListener, *chanListener) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended = true
	return e.grpc, e.grpcLn, e.httpLn
}

// shutdown starts a graceful stop of both servers and reports whether they
// finished before ctx ended.
func (e *grpcEngine) shutdown(ctx context.Context) bool {
	grpcServer, _, _ := e.end()
	e.stopOnce.Do(func() {
		go func() {
			if grpcServer != nil {
				grpcServer.GracefulStop()
			}
			close(e.stopped)
		}()
	})
	httpDone := e.http.Shutdown(ctx) == nil
	select {
	case <-e.stopped:
		return httpDone
	case <-ctx.Done():
		return false
	}
}

func (e *grpcEngine) close() {
	grpcServer, grpcLn, httpLn := e.end()
	if grpcServer != nil {
		grpcServer.Stop()
	}
	_ = e.http.Close()
	if grpcLn != nil {
		_ = grpcLn.Close()
		_ = httpLn.Close()
	}
}

// bridgeCredentials hands grpc-go connections the router has already
// accepted, decrypting them first on TLS listeners, and reports the TLS
// state so handlers see the peer certificate.
type bridgeCredentials struct{}

func (bridgeCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("goms: server-only credentials")
}

func (bridgeCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := bridgeInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	if rc, ok := c.(*replayConn); ok {
		if rc.tls != nil {
			info.tls = rc.tls
			info.SecurityLevel = credentials.PrivacyAndIntegrity
		}
		if g, ok := rc.Conn.(*guardedConn); ok {
			info.conn = g
		}
	}
	return c, info, nil
}

func (bridgeCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "goms"}
}

func (c bridgeCredentials) Clone() credentials.TransportCredentials { return c }

func (bridgeCredentials) OverrideServerName(string) error { return nil }

// bridgeInfo is what grpc-go's streams know of their connection: its TLS
// state on TLS listeners, and the connection, for tap.
type bridgeInfo struct {
	credentials.CommonAuthInfo
	tls  *tls.ConnectionState
	conn *guardedConn
}

func (i bridgeInfo) AuthType() string {
	if i.tls != nil {
		return "tls"
	}
	return "insecure"
}
