package goms_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// restToken is the bearer token the REST tests' servers require for Delete.
const restToken = "rest-secret"

// startREST serves the test services on an http-mode and a
// gateway-mode listener with REST on, and a grpc-mode listener, with
// Delete behind a bearer token so that the tests see the interceptors run
// for REST calls too.
func startREST(t *testing.T) *gomstest.Running {
	t.Helper()
	return gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{
			{Name: "http", Mode: goms.ModeHTTP, REST: true},
			{Name: "gateway", Mode: goms.ModeGateway, REST: true},
			{Name: "grpc", Mode: goms.ModeGRPC},
		},
		Auth: goms.Auth{
			Default:  "public",
			Policies: map[string]string{gomsv1connect.GoMsServiceName + "/Delete": "authenticated"},
			Verifier: func(_ context.Context, c goms.Credentials) (goms.Identity, error) {
				if c.Bearer != restToken {
					return goms.Identity{}, errors.New("wrong token")
				}
				return goms.Identity{Subject: "tester"}, nil
			},
		},
	}, nil)
}

func TestRESTRoutes(t *testing.T) {
	t.Parallel()
	srv := startREST(t)
	for _, listener := range []string{"http", "gateway"} {
		t.Run(listener, func(t *testing.T) {
			t.Parallel()
			base := srv.URL(listener)
			c := gomstest.HTTP1(t)
			name := "rest-" + listener

			created := rest(t, c, "POST", base+"/goms", `{"name":"`+name+`"}`)
			created.wantStatus(t, "POST /goms", http.StatusOK, "")
			id := created.str("item.id")
			if created.str("item.name") != name || len(id) != 16 {
				t.Fatalf("POST /goms: got %s, want an item named %q with an id", created.raw, name)
			}
			got := rest(t, c, "GET", base+"/goms/"+id, "")
			got.wantStatus(t, "GET /goms/{id}", http.StatusOK, "")
			if got.str("item.name") != name {
				t.Fatalf("GET /goms/{id}: got %s", got.raw)
			}
			list := rest(t, c, "GET", base+"/goms?page_size=1000", "")
			list.wantStatus(t, "GET /goms", http.StatusOK, "")
			if !strings.Contains(list.raw, `"`+id+`"`) {
				t.Fatalf("GET /goms: %s does not list %s", list.raw, id)
			}
			renamed := rest(t, c, "PATCH", base+"/goms/"+id, `{"name":"`+name+`-renamed"}`)
			renamed.wantStatus(t, "PATCH /goms/{id}", http.StatusOK, "")
			if renamed.str("item.name") != name+"-renamed" || renamed.str("item.id") != id {
				t.Fatalf("PATCH /goms/{id}: got %s", renamed.raw)
			}

			child := rest(t, c, "POST", base+"/child", `{"parentId":"`+id+`","name":"c-`+listener+`"}`)
			child.wantStatus(t, "POST /child", http.StatusOK, "")
			childID := child.str("item.id")
			if child.str("item.parentId") != id {
				t.Fatalf("POST /child: got %s", child.raw)
			}
			rest(t, c, "GET", base+"/child/"+childID, "").wantStatus(t, "GET /child/{id}", http.StatusOK, "")
			children := rest(t, c, "GET", base+"/child?parent_id="+id, "")
			children.wantStatus(t, "GET /child?parent_id", http.StatusOK, "")
			if items, _ := children.body["items"].([]any); len(items) != 1 {
				t.Fatalf("GET /child?parent_id=%s: got %s, want one item", id, children.raw)
			}
			patched := rest(t, c, "PATCH", base+"/child/"+childID, `{"name":"c2"}`)
			patched.wantStatus(t, "PATCH /child/{id}", http.StatusOK, "")
			if patched.str("item.name") != "c2" {
				t.Fatalf("PATCH /child/{id}: got %s", patched.raw)
			}
			rest(t, c, "DELETE", base+"/child/"+childID, "").wantStatus(t, "DELETE /child/{id}", http.StatusOK, "")
			rest(t, c, "GET", base+"/child/"+childID, "").wantStatus(t, "GET /child/{id} once deleted", http.StatusNotFound, "not found")

			// Delete goes through the auth interceptor, as any call.
			rest(t, c, "DELETE", base+"/goms/"+id, "").wantStatus(t, "DELETE /goms/{id} without a token", http.StatusUnauthorized, "")
			rest(t, c, "DELETE", base+"/goms/"+id, "", "Authorization", "Bearer "+restToken).wantStatus(t, "DELETE /goms/{id}", http.StatusOK, "")
			rest(t, c, "GET", base+"/goms/"+id, "").wantStatus(t, "GET /goms/{id} once deleted", http.StatusNotFound, "not found")
		})
	}
}

func TestRESTErrors(t *testing.T) {
	t.Parallel()
	srv := startREST(t)
	base := srv.URL("gateway")
	c := gomstest.HTTP1(t)
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"missing id", "GET", "/goms/" + unknownID, "", http.StatusNotFound, "not found"},
		{"rename missing id", "PATCH", "/goms/" + unknownID, `{"name":"x"}`, http.StatusNotFound, "not found"},
		{"missing child", "GET", "/child/" + unknownID, "", http.StatusNotFound, "not found"},
		{"body not JSON", "POST", "/goms", `{"name":`, http.StatusBadRequest, ""},
		{"body of the wrong shape", "POST", "/goms", `{"name":42}`, http.StatusBadRequest, ""},
		{"unknown field", "POST", "/goms", `{"nom":"x"}`, http.StatusBadRequest, ""},
		{"empty name", "POST", "/goms", `{"name":""}`, http.StatusBadRequest, "name"},
		{"bad page size", "GET", "/goms?page_size=-1", "", http.StatusBadRequest, "page_size"},
		{"child of a missing parent", "POST", "/child", `{"parentId":"` + unknownID + `","name":"c"}`, http.StatusBadRequest, "does not exist"},
		{"unknown path", "GET", "/nope", "", http.StatusNotFound, "unknown procedure /nope"},
		{"unknown method of a known service", "POST", "/goms.v1.GoMsService/Nope", `{}`, http.StatusNotFound, "unknown procedure"},
		{"method not allowed", "PUT", "/goms", `{"name":"x"}`, http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rest(t, c, tt.method, base+tt.path, tt.body)
			r.wantStatus(t, tt.method+" "+tt.path, tt.status, tt.msg)
			if r.body["code"] == nil {
				t.Errorf("body %s: want a code", r.raw)
			}
			if tt.status == http.StatusMethodNotAllowed {
				if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
					t.Errorf("Allow: %q, want GET and POST", allow)
				}
			}
		})
	}
}

// TestRESTBesideRPC checks that REST routes change nothing for RPC
// clients: procedures, the protocol filter's rejections and reflection.
func TestRESTBesideRPC(t *testing.T) {
	t.Parallel()
	srv := startREST(t)
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()

	for _, listener := range []string{"http", "gateway"} {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.HTTP1(t), srv.URL(listener), connect.WithProtoJSON())
		if _, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "rpc-" + listener})); err != nil {
			t.Fatalf("%s: Connect Create: %v", listener, err)
		}
		// REST and Connect calls reach the same handler.
		got := rest(t, gomstest.HTTP1(t), "GET", srv.URL(listener)+"/goms?page_size=1000", "")
		if !strings.Contains(got.raw, `"rpc-`+listener+`"`) {
			t.Fatalf("%s: GET /goms: %s does not list the item Connect created", listener, got.raw)
		}
	}

	// An http listener still refuses gRPC, on RPC and REST paths alike.
	grpcClient := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("http"), connect.WithGRPC())
	_, err := grpcClient.List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
	gomstest.WantError(t, err, connect.CodeUnimplemented, `listener "http" (mode http) does not accept gRPC requests`)
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL("http")+"/goms", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	res, err := gomstest.H2C(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if msg := res.Header.Get("Grpc-Message") + res.Trailer.Get("Grpc-Message"); !strings.Contains(msg, "does not accept gRPC") {
		t.Fatalf("gRPC POST /goms on the http listener: grpc-message %q", msg)
	}
	// A grpc listener knows nothing of REST.
	rest(t, gomstest.HTTP1(t), "GET", srv.URL("grpc")+"/goms", "").
		wantStatus(t, "GET /goms on the grpc listener", http.StatusNotImplemented, `listener "grpc" (mode grpc) does not accept Connect requests`)
	// Unknown procedures keep their Connect error.
	_, err = gomsv1connect.NewGoMsServiceClient(gomstest.HTTP1(t), srv.URL("gateway")+"/nope").List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
	gomstest.WantError(t, err, connect.CodeUnimplemented, "unknown procedure")

	// Reflection describes the services, with the google.api.http
	// annotations their file imports.
	stream := grpcreflect.NewClient(gomstest.H2C(t), srv.URL("http")).NewStream(ctx)
	defer stream.Close()
	files, err := stream.FileContainingSymbol(gomsv1connect.GoMsServiceName)
	if err != nil {
		t.Fatalf("reflection: FileContainingSymbol: %v", err)
	}
	var rule *annotations.HttpRule
	names := make(map[string]bool)
	for _, f := range files {
		names[f.GetName()] = true
		for _, s := range f.GetService() {
			for _, m := range s.GetMethod() {
				if s.GetName() == "GoMsService" && m.GetName() == "Get" {
					rule, _ = proto.GetExtension(m.GetOptions(), annotations.E_Http).(*annotations.HttpRule)
				}
			}
		}
	}
	if !names["google/api/annotations.proto"] || !names["google/api/http.proto"] {
		t.Fatalf("reflection: got files %v, want google/api/annotations.proto and http.proto among them", names)
	}
	if rule.GetGet() != "/goms/{id}" {
		t.Fatalf("reflection: GoMsService.Get has HTTP rule %v, want GET /goms/{id}", rule)
	}
}

func TestRESTConfig(t *testing.T) {
	t.Parallel()
	_, err := goms.New(goms.Config{Listeners: []goms.Listener{{Name: "g", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC, REST: true}}})
	if err == nil || !strings.Contains(err.Error(), `goms: listener "g": rest, openapi and cors need mode`) {
		t.Fatalf("REST on a grpc listener: got %v", err)
	}
	// REST with nothing to serve is a mistake reported by Listen.
	srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "h", Mode: goms.ModeHTTP, REST: true}}})
	err = srv.Listen()
	if err == nil || !strings.Contains(err.Error(), `goms: listener "h": rest: no service mounted on it has google.api.http rules`) {
		t.Fatalf("REST without annotated services: got %v", err)
	}
	_ = srv.Close()
}

func TestRESTMessageLimit(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{
		Listeners:       []goms.Listener{{Name: "http", Mode: goms.ModeHTTP, REST: true}},
		MaxMessageBytes: 1 << 10,
	}, nil)
	body := `{"name":"` + strings.Repeat("x", 2<<10) + `"}`
	r := rest(t, gomstest.HTTP1(t), "POST", srv.URL("http")+"/goms", body)
	// resource_exhausted: HTTP 429, google.rpc.Status code 8.
	if r.status != http.StatusTooManyRequests || !strings.Contains(string(r.raw), `"code":8`) {
		t.Fatalf("POST /goms of 2 KiB with a 1 KiB limit: status %d, body %.200s; want 429 and code 8", r.status, r.raw)
	}
}
