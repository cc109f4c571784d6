// Package gomstest starts real goms servers on loopback ports for tests,
// with the example services mounted, and builds the HTTP/1.1 and h2c
// clients that call them. Every server and client it makes is released by
// the test's Cleanup.
package gomstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// ShutdownTimeout is the grace period of the servers New makes when the
// configuration sets none: short, so that a stream a test leaves open does
// not hold its cleanup up for goms's default 10 s.
const ShutdownTimeout = 2 * time.Second

// waitServe bounds the wait for Serve to return once its context ended: the
// grace period, goms's flush timeout (2 s) and some slack.
const waitServe = 5 * time.Second

// New returns goms.New(cfg) with test defaults: listeners without an
// address get 127.0.0.1:0, a nil Logger discards, and a zero
// ShutdownTimeout is ShutdownTimeout. It fails the test when New fails.
func New(tb testing.TB, cfg goms.Config) *goms.Server {
	tb.Helper()
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

// MountExamples mounts goms.v1.GoMsService and child.v1.ChildService on
// every listener of srv, as examples/internal/app.MountAll does (which
// goms's tests cannot import: it is internal to examples). ChildService
// reaches GoMsService through srv.Client with srv.ClientOptions and
// clientOpts.
func MountExamples(srv *goms.Server, clientOpts ...connect.ClientOption) error {
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, append(srv.ClientOptions(), clientOpts...)...)
	return errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(gomsservice.New(), srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(childservice.New(parents), srv.HandlerOptions()...)),
	)
}

// Running is a server that Serve started.
type Running struct {
	// Server is the running server.
	Server *goms.Server

	stop context.CancelFunc
	done chan struct{}
	err  error // Serve's result, once done is closed
}

// Start makes a server with New, lets mount mount its handlers (nil mounts
// the example services, the child calling its parent over gRPC), and
// serves it with Serve.
func Start(tb testing.TB, cfg goms.Config, mount func(*goms.Server) error) *Running {
	tb.Helper()
	srv := New(tb, cfg)
	if mount == nil {
		mount = func(srv *goms.Server) error { return MountExamples(srv, connect.WithGRPC()) }
	}
	if err := mount(srv); err != nil {
		tb.Fatalf("mount: %v", err)
	}
	return Serve(tb, srv)
}

// Serve binds srv's listeners and serves them until Stop or the end of the
// test, whose cleanup stops the server and fails the test when Serve does
// not return nil in time.
func Serve(tb testing.TB, srv *goms.Server) *Running {
	tb.Helper()
	if err := srv.Listen(); err != nil {
		tb.Fatalf("Listen: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &Running{Server: srv, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = srv.Serve(ctx)
	}()
	tb.Cleanup(func() {
		r.stop()
		select {
		case <-r.done:
		case <-time.After(waitServe):
			_ = srv.Close()
			tb.Errorf("Serve did not return within %v of the end of the test", waitServe)
			<-r.done
			return
		}
		if r.err != nil {
			tb.Errorf("Serve: %v", r.err)
		}
	})
	return r
}

// URL returns the base URL of the named listener, "http://127.0.0.1:port".
func (r *Running) URL(listener string) string {
	addr := r.Server.Addr(listener)
	if addr == nil {
		panic("gomstest: no listener " + listener)
	}
	return "http://" + addr.String()
}

// Addr returns the host:port of the named listener.
func (r *Running) Addr(listener string) string {
	addr := r.Server.Addr(listener)
	if addr == nil {
		panic("gomstest: no listener " + listener)
	}
	return addr.String()
}

// Stop cancels Serve's context: the server begins its graceful shutdown.
func (r *Running) Stop() { r.stop() }

// Done is closed once Serve has returned.
func (r *Running) Done() <-chan struct{} { return r.done }

// Wait waits for Serve to return and returns its result, failing the test
// when it takes longer than the grace period plus a few seconds.
func (r *Running) Wait(tb testing.TB) error {
	tb.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(waitServe):
		tb.Fatalf("Serve did not return within %v", waitServe)
		return nil
	}
}

// H2C returns a client that speaks HTTP/2 without TLS with prior
// knowledge, as gRPC clients do.
func H2C(tb testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	tb.Cleanup(c.CloseIdleConnections)
	return c
}

// HTTP1 returns a client that speaks HTTP/1.1 only, as browsers do over
// plain HTTP.
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

// AwaitCreated proves that a Watch stream is live: since nothing tells
// when the server has subscribed a new watcher, it creates items named
// prefix-0, prefix-1, … every 20 ms (at most 100) until recv returns the
// CREATED event of one of them, and returns that event along with the
// item Create returned for the same name. Events of other items are
// skipped, so that watchers on a shared server do not disturb each other.
func AwaitCreated(tb testing.TB, recv func() (*gomsv1.WatchResponse, error), create func(name string) (*gomsv1.Item, error), prefix string) (event *gomsv1.WatchResponse, created *gomsv1.Item) {
	tb.Helper()
	var (
		mu    sync.Mutex
		items = make(map[string]*gomsv1.Item)
		stop  = make(chan struct{})
		errc  = make(chan error, 1)
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := range 100 {
			name := fmt.Sprintf("%s-%d", prefix, i)
			item, err := create(name)
			if err != nil {
				errc <- fmt.Errorf("Create(%q): %w", name, err)
				return
			}
			mu.Lock()
			items[name] = item
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	stopCreating := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopCreating()
	for range 1000 {
		ev, err := recv()
		if err != nil {
			stopCreating()
			select {
			case cerr := <-errc:
				tb.Fatalf("watch: %v (creating: %v)", err, cerr)
			default:
			}
			tb.Fatalf("watch: %v", err)
		}
		name := ev.GetItem().GetName()
		if ev.GetType() != gomsv1.ChangeType_CHANGE_TYPE_CREATED || !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		// The event may come before Create's response: wait for it.
		stopCreating()
		mu.Lock()
		defer mu.Unlock()
		if items[name] == nil {
			tb.Fatalf("watch reported %q, which Create did not return", name)
		}
		return ev, items[name]
	}
	tb.Fatalf("no CREATED event for %s-* among 1000 events", prefix)
	return nil, nil
}

// Watcher receives a GoMsService Watch stream that it opens on the first
// Recv: connect-go's Watch returns only once the server sends the first
// event, which AwaitCreated's creations bring.
type Watcher struct {
	ctx    context.Context
	client gomsv1connect.GoMsServiceClient
	stream *connect.ServerStreamForClient[gomsv1.WatchResponse]
}

// NewWatcher returns a Watcher of client's Watch, called with ctx.
func NewWatcher(ctx context.Context, client gomsv1connect.GoMsServiceClient) *Watcher {
	return &Watcher{ctx: ctx, client: client}
}

// Recv returns the next event; a stream that ends, cleanly or not, is an
// error (io.EOF for a clean end).
func (w *Watcher) Recv() (*gomsv1.WatchResponse, error) {
	if w.stream == nil {
		stream, err := w.client.Watch(w.ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
		if err != nil {
			return nil, fmt.Errorf("opening the Watch stream: %w", err)
		}
		w.stream = stream
	}
	if !w.stream.Receive() {
		err := w.stream.Err()
		if err == nil {
			err = io.EOF
		}
		return nil, fmt.Errorf("stream ended: %w", err)
	}
	return w.stream.Msg(), nil
}

// Close closes the stream, if Recv opened it.
func (w *Watcher) Close() {
	if w.stream != nil {
		_ = w.stream.Close()
	}
}

// Creator returns a create function for AwaitCreated: client's Create,
// called with ctx.
func Creator(ctx context.Context, client gomsv1connect.GoMsServiceClient) func(name string) (*gomsv1.Item, error) {
	return func(name string) (*gomsv1.Item, error) {
		res, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
		if err != nil {
			return nil, err
		}
		return res.Msg.GetItem(), nil
	}
}
