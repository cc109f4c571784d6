package goms_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
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
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
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
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
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

// TestEdgeDeadline sends Connect unary calls with a deadline shorter than
// the remote's answer through the edge, without a client-side deadline of
// its own: every answer is a whole deadline_exceeded error.
func TestEdgeDeadline(t *testing.T) {
	t.Parallel()
	edge := startEdge(t, goms.Config{}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(&policyService{delay: time.Second}, srv.HandlerOptions()...))
	})
	hc := gomstest.H2C(t)
	body, err := proto.Marshal(&gomsv1.GetRequest{Id: "x"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, edge.URL("edge")+gomsv1connect.GoMsServiceGetProcedure, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Connect-Protocol-Version", "1")
		req.Header.Set("Connect-Timeout-Ms", "100")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(got, []byte(`"code":"deadline_exceeded"`)) {
			t.Fatalf("call %d: %d %q %v, want 504 with a deadline_exceeded error", i, res.StatusCode, got, err)
		}
	}
}
