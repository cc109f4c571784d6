// Package gomstest starts real goms servers on loopback ports for tests
// and builds the clients that call them in every protocol: gRPC,
// gRPC-Web, Connect with JSON and Connect with protobuf, and in-process
// through Server.Client. Every server and client it makes is released by
// the test's Cleanup.
//
// A test mounts its handlers and gets a generated client per protocol:
//
//	ts := gomstest.Start(t, goms.Config{}, func(srv *goms.Server) error {
//		return srv.Mount(itemsv1connect.NewItemServiceHandler(impl, srv.HandlerOptions()...))
//	})
//	for _, p := range gomstest.Protocols {
//		client := gomstest.Dial(t, ts, "", p, itemsv1connect.NewItemServiceClient)
//		...
//	}
package gomstest

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/goms"
)

// ShutdownTimeout is the grace period of the servers New makes when the
// configuration sets none: short, so that a stream a test leaves open does
// not hold its cleanup up for goms's default 10 s.
const ShutdownTimeout = 2 * time.Second

// DefaultListener is the name of the listener New adds when the
// configuration has none: a gateway-mode listener, which accepts every
// protocol.
const DefaultListener = "gateway"

// waitServe bounds the wait for Serve to return once its context ended: the
// grace period, goms's flush timeout (2 s) and some slack.
const waitServe = 5 * time.Second

// New returns goms.New(cfg) with test defaults: a configuration without
// listeners gets one gateway-mode listener named DefaultListener,
// listeners without an address get 127.0.0.1:0, a nil Logger discards,
// and a zero ShutdownTimeout is ShutdownTimeout. It fails the test when
// New fails.
func New(tb testing.TB, cfg goms.Config) *goms.Server {
	tb.Helper()
	if len(cfg.Listeners) == 0 {
		cfg.Listeners = []goms.Listener{{Name: DefaultListener, Mode: goms.ModeGateway}}
	}
	cfg.Listeners = append([]goms.Listener(nil), cfg.Listeners...)
	for i := range cfg.Listeners {
		if cfg.Listeners[i].Addr == "" {
			cfg.Listeners[i].Addr = "127.0.0.1:0"
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = ShutdownTimeout
	}
	srv, err := goms.New(cfg)
	if err != nil {
		tb.Fatalf("goms.New: %v", err)
	}
	return srv
}

// Server is a goms server that Serve started on loopback ports.
type Server struct {
	// Server is the running server: Server.Client, SetHealth and the rest
	// are there.
	*goms.Server

	stop context.CancelFunc
	done chan struct{}
	err  error // Serve's result, once done is closed
}

// Start makes a server with New, lets mount mount its handlers (nil mounts
// nothing), and serves it with Serve.
func Start(tb testing.TB, cfg goms.Config, mount func(*goms.Server) error) *Server {
	tb.Helper()
	srv := New(tb, cfg)
	if mount != nil {
		if err := mount(srv); err != nil {
			tb.Fatalf("mount: %v", err)
		}
	}
	return Serve(tb, srv)
}

// Serve binds srv's listeners and serves them until Stop or the end of the
// test, whose cleanup stops the server and fails the test when Serve does
// not return nil in time.
func Serve(tb testing.TB, srv *goms.Server) *Server {
	tb.Helper()
	if err := srv.Listen(); err != nil {
		tb.Fatalf("Listen: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{Server: srv, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = srv.Serve(ctx)
	}()
	tb.Cleanup(func() {
		s.stop()
		select {
		case <-s.done:
		case <-time.After(waitServe):
			_ = srv.Close()
			tb.Errorf("Serve did not return within %v of the end of the test", waitServe)
			<-s.done
			return
		}
		if s.err != nil {
			tb.Errorf("Serve: %v", s.err)
		}
	})
	return s
}

// URL returns the base URL of the named listener, "http://127.0.0.1:port".
// It panics when the server has no such listener.
func (s *Server) URL(listener string) string {
	return "http://" + s.Addr(listener)
}

// Addr returns the host:port of the named listener. It panics when the
// server has no such listener.
func (s *Server) Addr(listener string) string {
	addr := s.Server.Addr(listener)
	if addr == nil {
		panic("gomstest: no listener " + listener)
	}
	return addr.String()
}

// Stop cancels Serve's context: the server begins its graceful shutdown.
func (s *Server) Stop() { s.stop() }

// Done is closed once Serve has returned.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait waits for Serve to return and returns its result, failing the test
// when it takes longer than the grace period plus a few seconds.
func (s *Server) Wait(tb testing.TB) error {
	tb.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(waitServe):
		tb.Fatalf("Serve did not return within %v", waitServe)
		return nil
	}
}

// H2C returns a client that speaks HTTP/2 without TLS with prior
// knowledge, as gRPC clients do. The test's cleanup closes its idle
// connections.
func H2C(tb testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	tb.Cleanup(c.CloseIdleConnections)
	return c
}

// HTTP1 returns a client that speaks HTTP/1.1 only, as browsers and curl
// do over plain HTTP. The test's cleanup closes its idle connections.
func HTTP1(tb testing.TB) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	tb.Cleanup(c.CloseIdleConnections)
	return c
}

// WantError fails the test unless err is a connect error with code whose
// message contains every one of parts.
func WantError(tb testing.TB, err error, code connect.Code, parts ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		tb.Fatalf("got code %v (%v), want %v", got, err, code)
	}
	for _, part := range parts {
		if !strings.Contains(err.Error(), part) {
			tb.Fatalf("error %q does not contain %q", err, part)
		}
	}
}
