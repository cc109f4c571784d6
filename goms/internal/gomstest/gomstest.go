// Package gomstest is goms's own test kit: the public one,
// goms/gomstest, with internal/testservice's services mounted by default,
// and helpers for their Watch stream.
package gomstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// Running is a server that Serve started: the public kit's Server.
type Running = gomstest.Server

// New is gomstest.New: goms.New(cfg) with test defaults.
func New(tb testing.TB, cfg goms.Config) *goms.Server {
	tb.Helper()
	return gomstest.New(tb, cfg)
}

// MountTestServices mounts internal/testservice's goms.v1.GoMsService and
// child.v1.ChildService on every listener of srv. ChildService reaches
// GoMsService through srv.Client with srv.ClientOptions and clientOpts.
func MountTestServices(srv *goms.Server, clientOpts ...connect.ClientOption) error {
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, append(srv.ClientOptions(), clientOpts...)...)
	return errors.Join(
		srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)),
		srv.Mount(childv1connect.NewChildServiceHandler(testservice.NewChild(parents), srv.HandlerOptions()...)),
	)
}

// Start is gomstest.Start, where a nil mount mounts the test services,
// the child calling its parent over gRPC.
func Start(tb testing.TB, cfg goms.Config, mount func(*goms.Server) error) *Running {
	tb.Helper()
	if mount == nil {
		mount = func(srv *goms.Server) error { return MountTestServices(srv, connect.WithGRPC()) }
	}
	return gomstest.Start(tb, cfg, mount)
}

// Serve is gomstest.Serve.
func Serve(tb testing.TB, srv *goms.Server) *Running {
	tb.Helper()
	return gomstest.Serve(tb, srv)
}

// H2C is gomstest.H2C: an HTTP/2 client without TLS.
func H2C(tb testing.TB) *http.Client { return gomstest.H2C(tb) }

// HTTP1 is gomstest.HTTP1: an HTTP/1.1 client.
func HTTP1(tb testing.TB) *http.Client { return gomstest.HTTP1(tb) }

// WantError is gomstest.WantError.
func WantError(tb testing.TB, err error, code connect.Code, parts ...string) {
	tb.Helper()
	gomstest.WantError(tb, err, code, parts...)
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
