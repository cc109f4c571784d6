package gomsservice_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/examples/services/internal/servicetest"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// serve mounts s on a real h2c server and returns a client for it.
func serve(t *testing.T, s *gomsservice.Service, opts ...connect.HandlerOption) gomsv1connect.GoMsServiceClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(gomsv1connect.NewGoMsServiceHandler(s, opts...))
	baseURL, httpClient := servicetest.Start(t, mux)
	return gomsv1connect.NewGoMsServiceClient(httpClient, baseURL)
}

// watch starts a Watch call that the test ends when it finishes.
func watch(t *testing.T, s *gomsservice.Service, client gomsv1connect.GoMsServiceClient) *connect.ServerStreamForClient[gomsv1.WatchResponse] {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	before := s.Watchers()
	stream, err := client.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	// Watch answers only once subscribed, so every later change reaches
	// the stream.
	if got := s.Watchers(); got != before+1 {
		t.Errorf("after Watch returned: %d watchers, want %d", got, before+1)
	}
	t.Cleanup(func() {
		cancel()
		_ = stream.Close()
		// Ended streams let the server shut down at once.
		servicetest.WaitFor(t, "the watcher to unsubscribe", func() bool { return s.Watchers() <= before })
	})
	return stream
}

func TestWatch(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	client := serve(t, s)
	create(t, s, "before the watch") // must not be reported

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := client.Watch(ctx, connect.NewRequest(&gomsv1.WatchRequest{}))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer func() { _ = stream.Close() }()
	// Watch answers only once subscribed, so no wait is needed.
	if n := s.Watchers(); n != 1 {
		t.Fatalf("after Watch returned: %d watchers, want 1", n)
	}

	created := create(t, s, "a")
	updated, err := s.Update(t.Context(), connect.NewRequest(&gomsv1.UpdateRequest{Id: created.GetId(), Name: "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(t.Context(), connect.NewRequest(&gomsv1.DeleteRequest{Id: created.GetId()})); err != nil {
		t.Fatal(err)
	}

	want := []*gomsv1.WatchResponse{
		{Type: gomsv1.ChangeType_CHANGE_TYPE_CREATED, Item: created},
		{Type: gomsv1.ChangeType_CHANGE_TYPE_UPDATED, Item: updated.Msg.GetItem()},
		{Type: gomsv1.ChangeType_CHANGE_TYPE_DELETED, Item: updated.Msg.GetItem()},
	}
	var got []*gomsv1.WatchResponse
	for range want {
		if !stream.Receive() {
			t.Fatalf("stream ended after %d events: %v", len(got), stream.Err())
		}
		got = append(got, stream.Msg())
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// Going away ends the call on the server and unsubscribes it.
	cancel()
	if stream.Receive() {
		t.Fatalf("unexpected event after cancel: %v", stream.Msg())
	}
	servicetest.WantError(t, stream.Err(), connect.CodeCanceled, "")
	servicetest.WaitFor(t, "the watcher to unsubscribe", func() bool { return s.Watchers() == 0 })
}

func TestWatchMany(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	client := serve(t, s)
	streams := []*connect.ServerStreamForClient[gomsv1.WatchResponse]{watch(t, s, client), watch(t, s, client)}

	item := create(t, s, "seen by all")
	want := &gomsv1.WatchResponse{Type: gomsv1.ChangeType_CHANGE_TYPE_CREATED, Item: item}
	for i, stream := range streams {
		if !stream.Receive() {
			t.Fatalf("watcher %d: %v", i, stream.Err())
		}
		if diff := cmp.Diff(want, stream.Msg(), protocmp.Transform()); diff != "" {
			t.Errorf("watcher %d (-want +got):\n%s", i, diff)
		}
	}
}

// gate holds every handler-side stream Send until open is closed, to play
// a watcher that does not read.
type gate struct{ open chan struct{} }

func (g gate) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (g gate) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (g gate) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, gatedConn{StreamingHandlerConn: conn, ctx: ctx, open: g.open})
	}
}

type gatedConn struct {
	connect.StreamingHandlerConn
	ctx  context.Context
	open <-chan struct{}
}

func (c gatedConn) Send(msg any) error {
	if msg == nil { // headers only: let the call open
		return c.StreamingHandlerConn.Send(nil)
	}
	select {
	case <-c.open:
		return c.StreamingHandlerConn.Send(msg)
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

func TestWatchSlowWatcherIsDropped(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	g := gate{open: make(chan struct{})}
	var release sync.Once
	openGate := func() { release.Do(func() { close(g.open) }) }
	t.Cleanup(openGate)
	stream := watch(t, s, serve(t, s, connect.WithInterceptors(g)))

	// With the handler stuck in Send, these overflow the watcher's
	// buffer; writers must not wait for it.
	for i := range 2 * gomsservice.WatchBuffer {
		create(t, s, fmt.Sprintf("item-%d", i))
	}
	if n := s.Watchers(); n != 0 {
		t.Fatalf("%d watchers still subscribed, want the slow one dropped", n)
	}
	openGate()

	// The handler may have taken one event before it stalled; after that
	// it must end the stream instead of replaying its backlog.
	received := 0
	for range 2 * gomsservice.WatchBuffer {
		if !stream.Receive() {
			break
		}
		received++
	}
	if received > 1 {
		t.Errorf("dropped watcher received %d events, want at most 1", received)
	}
	servicetest.WantError(t, stream.Err(), connect.CodeResourceExhausted, "watcher fell behind; reconnect")
}

// createMany streams names to CreateMany and returns its answer.
func createMany(ctx context.Context, client gomsv1connect.GoMsServiceClient, names ...string) (*gomsv1.CreateManyResponse, error) {
	stream := client.CreateMany(ctx)
	for _, name := range names {
		// The server may answer before reading everything; the
		// answer then comes from CloseAndReceive.
		if err := stream.Send(&gomsv1.CreateManyRequest{Name: name}); err != nil {
			break
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func TestCreateMany(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	client := serve(t, s)

	res, err := createMany(t.Context(), client, "a", "b", "c")
	if err != nil {
		t.Fatalf("CreateMany: %v", err)
	}
	want := []*gomsv1.Item{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	ignoreServerFields := protocmp.IgnoreFields(&gomsv1.Item{}, "id", "create_time", "update_time")
	if diff := cmp.Diff(want, res.GetItems(), protocmp.Transform(), ignoreServerFields); diff != "" {
		t.Errorf("CreateMany (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(res.GetItems(), list(t, s, 0, "").GetItems(), protocmp.Transform()); diff != "" {
		t.Errorf("List after CreateMany (-want +got):\n%s", diff)
	}

	empty, err := createMany(t.Context(), client)
	if err != nil {
		t.Fatalf("empty CreateMany: %v", err)
	}
	if len(empty.GetItems()) != 0 {
		t.Errorf("empty CreateMany created %d items", len(empty.GetItems()))
	}
}

func TestCreateManyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		names   []string
		code    connect.Code
		message string
	}{
		{"empty name", []string{"a", "", "c"}, connect.CodeInvalidArgument, "message 1: name must not be empty"},
		{"name taken by a stored item", []string{"a", "taken"}, connect.CodeAlreadyExists, `message 1: an item named "taken" already exists`},
		{"name repeated in the stream", []string{"a", "b", "a"}, connect.CodeAlreadyExists, `message 2: an item named "a" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := gomsservice.New()
			taken := create(t, s, "taken")
			_, err := createMany(t.Context(), serve(t, s), tt.names...)
			servicetest.WantError(t, err, tt.code, tt.message)
			// All or nothing: only the item stored beforehand remains.
			got := list(t, s, 0, "").GetItems()
			if diff := cmp.Diff([]*gomsv1.Item{taken}, got, protocmp.Transform()); diff != "" {
				t.Errorf("items after a failed CreateMany (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	client := serve(t, s)
	a, b := create(t, s, "a"), create(t, s, "b")

	stream := client.Lookup(t.Context())
	want := []*gomsv1.LookupResponse{
		{Id: a.GetId(), Item: a},
		{Id: unknownID},
		{Id: b.GetId(), Item: b},
	}
	var got []*gomsv1.LookupResponse
	// One request, one answer: the stream must answer as ids arrive.
	for _, w := range want {
		if err := stream.Send(&gomsv1.LookupRequest{Id: w.GetId()}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		res, err := stream.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		got = append(got, res)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Lookup (-want +got):\n%s", diff)
	}
	if err := stream.CloseRequest(); err != nil {
		t.Fatal(err)
	}
	if res, err := stream.Receive(); !errors.Is(err, io.EOF) {
		t.Errorf("after CloseRequest: got %v, %v; want io.EOF", res, err)
	}
	if err := stream.CloseResponse(); err != nil {
		t.Error(err)
	}
}

func TestLookupEmptyID(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	stream := serve(t, s).Lookup(t.Context())
	defer func() { _ = stream.CloseResponse() }()
	if err := stream.Send(&gomsv1.LookupRequest{}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, err := stream.Receive()
	servicetest.WantError(t, err, connect.CodeInvalidArgument, "id must not be empty")
}
