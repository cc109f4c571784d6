package goms_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// startEdge starts a backend goms server of cfg with one listener,
// "gateway", and what mount mounts, and an edge whose listener "edge"
// exposes the backend's GoMsService.
func startEdge(t *testing.T, cfg goms.Config, mount func(*goms.Server) error) *gomstest.Running {
	t.Helper()
	cfg.Listeners = []goms.Listener{{Name: "gateway"}}
	backend := gomstest.Start(t, cfg, mount)
	return gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "edge"}},
		Remotes: []goms.Remote{{
			Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{backend.Addr("gateway")}, Expose: []string{"edge"},
		}},
	}, func(*goms.Server) error { return nil })
}

// TestEdge exposes a remote GoMsService on an edge listener and calls it
// through the edge in every protocol: unary calls, errors with their codes,
// a server stream and a bidi stream must come through intact.
func TestEdge(t *testing.T) {
	t.Parallel()
	edge := startEdge(t, goms.Config{}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(gomsservice.New(), srv.HandlerOptions()...))
	})

	for _, p := range []struct {
		name   string
		client func(t *testing.T) gomsv1connect.GoMsServiceClient
		bidi   bool
	}{
		{"grpc", func(t *testing.T) gomsv1connect.GoMsServiceClient {
			return gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), edge.URL("edge"), connect.WithGRPC())
		}, true},
		{"grpcweb-h1", func(t *testing.T) gomsv1connect.GoMsServiceClient {
			return gomsv1connect.NewGoMsServiceClient(gomstest.HTTP1(t), edge.URL("edge"), connect.WithGRPCWeb())
		}, false},
		{"connect-json-h1", func(t *testing.T) gomsv1connect.GoMsServiceClient {
			return gomsv1connect.NewGoMsServiceClient(gomstest.HTTP1(t), edge.URL("edge"), connect.WithProtoJSON())
		}, false},
		{"connect-h2c", func(t *testing.T) gomsv1connect.GoMsServiceClient {
			return gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), edge.URL("edge"))
		}, true},
	} {
		t.Run(p.name, func(t *testing.T) {
			client := p.client(t)
			created, err := client.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "edge-" + p.name}))
			if err != nil {
				t.Fatalf("Create through the edge: %v", err)
			}
			id := created.Msg.GetItem().GetId()
			got, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: id}))
			if err != nil || got.Msg.GetItem().GetName() != "edge-"+p.name {
				t.Fatalf("Get through the edge: %v, %v", got, err)
			}
			_, err = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0000000000000000"}))
			gomstest.WantError(t, err, connect.CodeNotFound, "0000000000000000")

			watch := gomstest.NewWatcher(t.Context(), client)
			ev, item := gomstest.AwaitCreated(t, watch.Recv, gomstest.Creator(t.Context(), client), "watched-"+p.name)
			want := &gomsv1.WatchResponse{Type: gomsv1.ChangeType_CHANGE_TYPE_CREATED, Item: item}
			if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
				t.Errorf("Watch event through the edge (-want +got):\n%s", diff)
			}
			watch.Close()

			if !p.bidi {
				return
			}
			bidi := client.Lookup(t.Context())
			for _, want := range []string{id, "0000000000000000"} {
				if err := bidi.Send(&gomsv1.LookupRequest{Id: want}); err != nil {
					t.Fatal(err)
				}
				res, err := bidi.Receive()
				if err != nil {
					t.Fatalf("Lookup through the edge: %v", err)
				}
				if res.GetId() != want || (want == id) != (res.GetItem() != nil) {
					t.Errorf("Lookup(%s) = %v", want, res)
				}
			}
			if err := bidi.CloseRequest(); err != nil {
				t.Fatal(err)
			}
			if _, err := bidi.Receive(); !errors.Is(err, io.EOF) {
				t.Errorf("end of Lookup: %v, want EOF", err)
			}
		})
	}
}

// TestEdgeStreamEndedEarly checks that a bidi stream the remote ends before
// the client has finished sending (its first message is over the remote's
// limit) ends through the edge too, with the remote's error, while the
// client still holds its side of the stream open.
func TestEdgeStreamEndedEarly(t *testing.T) {
	t.Parallel()
	edge := startEdge(t, goms.Config{MaxMessageBytes: 1024}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(gomsservice.New(), srv.HandlerOptions()...))
	})

	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), edge.URL("edge"), opt)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		bidi := client.Lookup(ctx)
		if err := bidi.Send(&gomsv1.LookupRequest{Id: strings.Repeat("x", 4096)}); err != nil {
			t.Fatal(err)
		}
		// The request side stays open: the answer must not wait for it.
		_, err := bidi.Receive()
		gomstest.WantError(t, err, connect.CodeResourceExhausted)
		_ = bidi.CloseRequest()
		_ = bidi.CloseResponse()
		cancel()
	}
}

// TestEdgeEarlyAnswerHTTP1 checks a call an HTTP/1.1 client makes through
// the edge to a remote that answers before it has read the request: the
// answer comes through whole while the client is still sending its body.
// (net/http's HTTP/1.1 server discards the rest of a request body once
// the response headers go out, under the proxy copying it upstream.)
func TestEdgeEarlyAnswerHTTP1(t *testing.T) {
	t.Parallel()
	answer := bytes.Repeat([]byte("r"), 1000)
	edge := startEdge(t, goms.Config{}, func(srv *goms.Server) error {
		return srv.Mount("/"+gomsv1connect.GoMsServiceName+"/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			// Headers first, the body later, as a gRPC-Web error's
			// trailers may come.
			w.Header().Set("Content-Type", "application/proto")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			time.Sleep(300 * time.Millisecond)
			_, _ = w.Write(answer)
		}))
	})

	for i := range 4 {
		conn, err := net.Dial("tcp", edge.Addr("edge"))
		if err != nil {
			t.Fatal(err)
		}
		const half = 100_000
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: edge\r\nContent-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: %d\r\n\r\n",
			gomsv1connect.GoMsServiceGetProcedure, 2*half)
		_, _ = conn.Write(make([]byte, half))
		time.Sleep(100 * time.Millisecond) // the answer's headers are back
		_, _ = conn.Write(make([]byte, half))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got, err := io.ReadAll(res.Body)
		_ = conn.Close()
		if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(got, answer) {
			t.Fatalf("call %d: status %d, %d bytes of %d, %v", i, res.StatusCode, len(got), len(answer), err)
		}
	}
}
