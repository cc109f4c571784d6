// Package servicetest holds the helpers of the example services' tests:
// real HTTP servers speaking HTTP/1.1 and unencrypted HTTP/2 (h2c), so that
// streaming calls run over the same transport as in production, and error
// and polling checks.
package servicetest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// Start serves handler on a fresh loopback port until the test ends and
// returns the server's base URL and a client for it (see NewClient). The
// test fails if a call is still running when it ends.
func Start(tb testing.TB, handler http.Handler) (baseURL string, client *http.Client) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	var serverProtocols http.Protocols
	serverProtocols.SetHTTP1(true)
	serverProtocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           handler,
		Protocols:         &serverProtocols,
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	tb.Cleanup(func() {
		// Shutdown returns once every handler has; a stream a test left
		// open fails the test here rather than hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
			_ = srv.Close()
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), NewClient()
}

// NewClient returns a client that speaks h2c with prior knowledge, the way
// one service calls another inside a cluster. It opens a connection per
// call: an HTTP/2 server that shuts down waits a second for the client to
// close a connection kept for reuse, which would slow every test down.
func NewClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, DisableKeepAlives: true}}
}

// ClosedURL returns the base URL of a loopback port that nothing listens
// on, for testing how callers handle an unreachable service.
func ClosedURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatalf("close listener: %v", err)
	}
	return "http://" + addr
}

// WantError fails the test unless err carries code and its message
// contains part.
func WantError(tb testing.TB, err error, code connect.Code, part string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %v containing %q", code, part)
	}
	if got := connect.CodeOf(err); got != code {
		tb.Fatalf("got code %v (%v), want %v", got, err, code)
	}
	if !strings.Contains(err.Error(), part) {
		tb.Fatalf("error %q does not contain %q", err, part)
	}
}

// WaitFor polls cond until it holds, failing the test after a few seconds.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
