package goms_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// rpcProtocol is one way a connect-go client speaks to a server.
type rpcProtocol struct {
	name  string
	grpc  bool // gRPC proper, which needs HTTP/2
	web   bool // gRPC-Web
	get   bool // Connect unary calls of NO_SIDE_EFFECTS methods as GET
	opts  []connect.ClientOption
	human string // how goms names the protocol in rejections
}

var rpcProtocols = []rpcProtocol{
	{name: "grpc-proto", grpc: true, human: "gRPC", opts: []connect.ClientOption{connect.WithGRPC()}},
	{name: "grpc-json", grpc: true, human: "gRPC", opts: []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()}},
	{name: "grpcweb-proto", web: true, human: "gRPC-Web", opts: []connect.ClientOption{connect.WithGRPCWeb()}},
	{name: "grpcweb-json", web: true, human: "gRPC-Web", opts: []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
	{name: "connect-proto", human: "Connect"},
	{name: "connect-json", human: "Connect", opts: []connect.ClientOption{connect.WithProtoJSON()}},
	{name: "connect-get", get: true, human: "Connect", opts: []connect.ClientOption{
		connect.WithProtoJSON(), connect.WithHTTPGet(), connect.WithHTTPGetMaxURLSize(8<<10, false),
	}},
}

// accepts reports whether a listener of mode m should serve p.
func accepts(m goms.Mode, p rpcProtocol) bool {
	switch m {
	case goms.ModeGRPC:
		return p.grpc
	case goms.ModeHTTP:
		return !p.grpc
	default:
		return true
	}
}

// methodRecorder remembers the HTTP method of the last request to each
// path, to prove that Connect GET calls were made as GET.
type methodRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	last map[string]string
}

func (m *methodRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	m.mu.Lock()
	m.last[r.URL.Path] = r.Method
	m.mu.Unlock()
	return m.next.RoundTrip(r)
}

func (m *methodRecorder) method(path string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[path]
}

// TestProtocolMatrix calls every kind of RPC with every protocol and codec
// connect-go speaks, over HTTP/1.1 and h2c, on a listener of each mode:
// accepted combinations work, the others get CodeUnimplemented naming the
// listener and its mode.
func TestProtocolMatrix(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, allModes(), nil)
	transports := []struct {
		name   string
		h2     bool
		client func(testing.TB) *http.Client
	}{
		{"http1", false, gomstest.HTTP1},
		{"h2c", true, gomstest.H2C},
	}
	for _, l := range allModes().Listeners {
		for _, tr := range transports {
			for _, p := range rpcProtocols {
				if p.grpc && !tr.h2 {
					continue // gRPC needs HTTP/2
				}
				name := l.Name + "/" + tr.name + "/" + p.name
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					// A client of its own: a grpcgo connection that began
					// with gRPC answers later requests of other protocols
					// with grpc-go's bare 415, as EngineGRPC documents.
					rec := &methodRecorder{next: tr.client(t).Transport, last: make(map[string]string)}
					httpClient := &http.Client{Transport: rec}
					client := gomsv1connect.NewGoMsServiceClient(httpClient, srv.URL(l.Name), p.opts...)
					c := matrixCase{name: name, client: client, rec: rec, bidi: tr.h2}
					if accepts(l.Mode, p) {
						c.accepted(t, p)
						return
					}
					c.rejected(t, p, l)
				})
			}
		}
	}
}

type matrixCase struct {
	name   string
	client gomsv1connect.GoMsServiceClient
	rec    *methodRecorder
	bidi   bool // the transport can carry bidirectional streams
}

func (c matrixCase) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (c matrixCase) create(ctx context.Context, name string) (*gomsv1.Item, error) {
	res, err := c.client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetItem(), nil
}

func (c matrixCase) accepted(t *testing.T, p rpcProtocol) {
	t.Run("unary", func(t *testing.T) {
		ctx := c.ctx(t)
		item, err := c.create(ctx, c.name+" unary")
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if item.GetId() == "" || item.GetName() != c.name+" unary" {
			t.Fatalf("Create returned %v", item)
		}
		got, err := c.client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: item.GetId()}))
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if diff := cmp.Diff(item, got.Msg.GetItem(), protocmp.Transform()); diff != "" {
			t.Errorf("Get differs from Create (-create +get):\n%s", diff)
		}
		list, err := c.client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 1000}))
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if !containsItem(list.Msg.GetItems(), item) {
			t.Errorf("List does not hold %v", item)
		}
		wantGet := http.MethodPost
		if p.get {
			wantGet = http.MethodGet
		}
		if got := c.rec.method(gomsv1connect.GoMsServiceGetProcedure); got != wantGet {
			t.Errorf("Get was sent as %s, want %s", got, wantGet)
		}
		if got := c.rec.method(gomsv1connect.GoMsServiceCreateProcedure); got != http.MethodPost {
			t.Errorf("Create was sent as %s, want POST", got)
		}
	})
	if p.get {
		return // the streams are those of connect-json
	}
	t.Run("server-stream", func(t *testing.T) {
		ctx := c.ctx(t)
		// connect-go's Watch returns once the response headers are in,
		// which the server sends with the first event: open the stream
		// from recv, while AwaitCreated creates items.
		watch := gomstest.NewWatcher(ctx, c.client)
		defer watch.Close()
		create := func(name string) (*gomsv1.Item, error) { return c.create(ctx, name) }
		ev, item := gomstest.AwaitCreated(t, watch.Recv, create, c.name+" watch")
		want := &gomsv1.WatchResponse{Type: gomsv1.ChangeType_CHANGE_TYPE_CREATED, Item: item}
		if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
			t.Errorf("event (-want +got):\n%s", diff)
		}
	})
	t.Run("client-stream", func(t *testing.T) {
		stream := c.client.CreateMany(c.ctx(t))
		names := []string{c.name + " many 0", c.name + " many 1", c.name + " many 2"}
		for _, name := range names {
			if err := stream.Send(&gomsv1.CreateManyRequest{Name: name}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		res, err := stream.CloseAndReceive()
		if err != nil {
			t.Fatalf("CreateMany: %v", err)
		}
		var got []string
		for _, item := range res.Msg.GetItems() {
			got = append(got, item.GetName())
		}
		if diff := cmp.Diff(names, got); diff != "" {
			t.Errorf("created names (-want +got):\n%s", diff)
		}
	})
	if !c.bidi {
		return
	}
	t.Run("bidi-stream", func(t *testing.T) {
		ctx := c.ctx(t)
		item, err := c.create(ctx, c.name+" lookup")
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		stream := c.client.Lookup(ctx)
		want := []*gomsv1.LookupResponse{{Id: item.GetId(), Item: item}, {Id: unknownID}}
		for _, w := range want {
			if err := stream.Send(&gomsv1.LookupRequest{Id: w.GetId()}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got, err := stream.Receive()
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if diff := cmp.Diff(w, got, protocmp.Transform()); diff != "" {
				t.Errorf("lookup of %q (-want +got):\n%s", w.GetId(), diff)
			}
		}
		if err := stream.CloseRequest(); err != nil {
			t.Fatalf("CloseRequest: %v", err)
		}
		if _, err := stream.Receive(); !errors.Is(err, io.EOF) {
			t.Errorf("Receive after CloseRequest: %v, want io.EOF", err)
		}
		if err := stream.CloseResponse(); err != nil {
			t.Errorf("CloseResponse: %v", err)
		}
	})
}

func (c matrixCase) rejected(t *testing.T, p rpcProtocol, l goms.Listener) {
	want := []string{
		fmt.Sprintf("listener %q (mode %s)", l.Name, l.Mode),
		"does not accept " + p.human + " requests",
	}
	t.Run("unary", func(t *testing.T) {
		ctx := c.ctx(t)
		_, err := c.create(ctx, c.name+" unary")
		gomstest.WantError(t, err, connect.CodeUnimplemented, want...)
		_, err = c.client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: unknownID}))
		gomstest.WantError(t, err, connect.CodeUnimplemented, want...)
		if p.get {
			if got := c.rec.method(gomsv1connect.GoMsServiceGetProcedure); got != http.MethodGet {
				t.Errorf("Get was sent as %s, want GET", got)
			}
		}
	})
	if p.get {
		return
	}
	t.Run("server-stream", func(t *testing.T) {
		stream, err := c.client.Watch(c.ctx(t), connect.NewRequest(&gomsv1.WatchRequest{}))
		if err == nil {
			defer stream.Close()
			if stream.Receive() {
				t.Fatalf("Watch received %v", stream.Msg())
			}
			err = stream.Err()
		}
		gomstest.WantError(t, err, connect.CodeUnimplemented, want...)
	})
	t.Run("client-stream", func(t *testing.T) {
		stream := c.client.CreateMany(c.ctx(t))
		_ = stream.Send(&gomsv1.CreateManyRequest{Name: c.name + " many"}) // may fail once the answer is in
		_, err := stream.CloseAndReceive()
		gomstest.WantError(t, err, connect.CodeUnimplemented, want...)
	})
	if !c.bidi {
		return
	}
	t.Run("bidi-stream", func(t *testing.T) {
		stream := c.client.Lookup(c.ctx(t))
		_ = stream.Send(&gomsv1.LookupRequest{Id: unknownID})
		_, err := stream.Receive()
		gomstest.WantError(t, err, connect.CodeUnimplemented, want...)
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	})
}

func containsItem(items []*gomsv1.Item, want *gomsv1.Item) bool {
	for _, item := range items {
		if cmp.Equal(item, want, protocmp.Transform()) {
			return true
		}
	}
	return false
}

// TestUnknownProcedure checks that a path no mounted service serves gets
// CodeUnimplemented in the caller's protocol, on every listener that
// accepts that protocol.
func TestUnknownProcedure(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, allModes(), nil)
	cases := []struct {
		listener string
		protocol string
		opts     []connect.ClientOption
	}{
		{"grpc", "grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcgo", "grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"gateway", "grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"http", "grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"gateway", "grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"http", "connect", nil},
		{"gateway", "connect", nil},
		{"gateway", "connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
	}
	procedures := []struct{ name, path, want string }{
		// A method the mounted service's descriptor does not have.
		{"method", "/goms.v1.GoMsService/Nope", "unknown procedure /goms.v1.GoMsService/Nope"},
		// A service nobody mounted.
		{"service", "/nope.v1.NopeService/Get", "unknown procedure /nope.v1.NopeService/Get"},
	}
	for _, c := range cases {
		for _, proc := range procedures {
			t.Run(c.listener+"/"+c.protocol+"/"+proc.name, func(t *testing.T) {
				t.Parallel()
				client := connect.NewClient[gomsv1.GetRequest, gomsv1.GetResponse](gomstest.H2C(t), srv.URL(c.listener)+proc.path, c.opts...)
				ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
				defer cancel()
				_, err := client.CallUnary(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: unknownID}))
				gomstest.WantError(t, err, connect.CodeUnimplemented, proc.want, fmt.Sprintf("listener %q", c.listener))
			})
		}
	}
}

// TestRejectionWire checks the raw answers to excluded protocols: the
// Connect JSON error with HTTP 501 for Connect, the grpc-status for
// gRPC-Web, and for requests in no RPC protocol at all the bare 415 with
// Accept-Post that connect-go and grpc-go give (the conformance suite
// checks it).
func TestRejectionWire(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, allModes(), nil)
	client := gomstest.HTTP1(t)
	cases := []struct {
		name, listener, contentType, body string
		wantStatus                        int
		wantContentType                   string
		wantInBody                        string
		wantGRPCStatus                    string
		wantAcceptPost                    string // contained in Accept-Post
	}{
		{
			name: "connect-json on grpc", listener: "grpc", contentType: "application/json", body: `{"name":"x"}`,
			wantStatus: http.StatusNotImplemented, wantContentType: "application/json",
			wantInBody: `listener \"grpc\" (mode grpc) does not accept Connect requests: it serves gRPC only`,
		},
		{
			name: "text on grpc", listener: "grpc", contentType: "text/plain", body: "x",
			wantStatus: http.StatusUnsupportedMediaType, wantAcceptPost: "application/grpc",
		},
		{
			name: "connect-json on grpcgo", listener: "grpcgo", contentType: "application/json", body: `{"name":"x"}`,
			wantStatus: http.StatusNotImplemented, wantContentType: "application/json",
			wantInBody: `listener \"grpcgo\" (mode grpc) does not accept Connect requests: it serves gRPC only`,
		},
		{
			name: "grpcweb on grpc", listener: "grpc", contentType: "application/grpc-web+proto", body: "\x00\x00\x00\x00\x00",
			wantStatus: http.StatusOK, wantContentType: "application/grpc-web+proto", wantGRPCStatus: "12",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
				srv.URL(c.listener)+gomsv1connect.GoMsServiceCreateProcedure, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", c.contentType)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != c.wantStatus {
				t.Errorf("status %d, want %d (body %q)", res.StatusCode, c.wantStatus, body)
			}
			if got := res.Header.Get("Content-Type"); got != c.wantContentType {
				t.Errorf("Content-Type %q, want %q", got, c.wantContentType)
			}
			if !strings.Contains(string(body), c.wantInBody) {
				t.Errorf("body %q does not contain %q", body, c.wantInBody)
			}
			if got := res.Header.Get("Grpc-Status"); got != c.wantGRPCStatus {
				t.Errorf("Grpc-Status %q, want %q", got, c.wantGRPCStatus)
			}
			if got := res.Header.Get("Accept-Post"); c.wantAcceptPost != "" && !strings.Contains(got, c.wantAcceptPost) {
				t.Errorf("Accept-Post %q, want it to contain %q", got, c.wantAcceptPost)
			}
		})
	}
}
