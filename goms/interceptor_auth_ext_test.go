package goms_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/health/grpc_health_v1"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// identityService answers with the caller's identity: Get puts the
// subject in the item's name ("anonymous" without identity), Delete in the
// X-Subject response header.
type identityService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func subjectOf(ctx context.Context) string {
	id, ok := goms.IdentityFrom(ctx)
	if !ok {
		return "anonymous"
	}
	return id.Subject + " (" + id.Method + ")"
}

func (identityService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId(), Name: subjectOf(ctx)}}), nil
}

func (identityService) Delete(ctx context.Context, _ *connect.Request[gomsv1.DeleteRequest]) (*connect.Response[gomsv1.DeleteResponse], error) {
	res := connect.NewResponse(&gomsv1.DeleteResponse{})
	res.Header().Set("X-Subject", subjectOf(ctx))
	return res, nil
}

func (identityService) Update(context.Context, *connect.Request[gomsv1.UpdateRequest]) (*connect.Response[gomsv1.UpdateResponse], error) {
	return connect.NewResponse(&gomsv1.UpdateResponse{}), nil
}

const (
	goodToken  = "good-token-1234"
	goodAPIKey = "good-key-5678"
	// refusedToken is a valid token whose holder may not call the method.
	refusedToken = "refused-token"
)

func testVerifier(_ context.Context, c goms.Credentials) (goms.Identity, error) {
	switch {
	case c.Bearer == goodToken:
		return goms.Identity{Subject: "alice"}, nil
	case c.APIKey == goodAPIKey:
		return goms.Identity{Subject: "batch-job"}, nil
	case c.Bearer == refusedToken:
		return goms.Identity{}, connect.NewError(connect.CodePermissionDenied, errors.New("alice may not "+c.Procedure))
	}
	return goms.Identity{}, errors.New("unknown credentials " + c.Bearer + c.APIKey)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Auth: goms.Auth{
			Default: "public",
			Policies: map[string]string{
				"goms.v1.GoMsService/Delete": "authenticated",
				"goms.v1.GoMsService/Update": "denied",
			},
			Verifier: testVerifier,
		},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(identityService{}, srv.HandlerOptions()...))
	})
	cases := []struct {
		name     string
		header   http.Header
		wantCode connect.Code // 0: success
		wantSub  string
	}{
		{"no credentials", nil, connect.CodeUnauthenticated, ""},
		{"wrong token", http.Header{"Authorization": {"Bearer wrong-token"}}, connect.CodeUnauthenticated, ""},
		{"not a bearer token", http.Header{"Authorization": {"Basic " + goodToken}}, connect.CodeUnauthenticated, ""},
		{"wrong API key", http.Header{"X-Api-Key": {"wrong-key"}}, connect.CodeUnauthenticated, ""},
		{"refused token", http.Header{"Authorization": {"Bearer " + refusedToken}}, connect.CodePermissionDenied, ""},
		{"right token", http.Header{"Authorization": {"Bearer " + goodToken}}, 0, "alice (bearer)"},
		{"right token, lower-case scheme", http.Header{"Authorization": {"bearer " + goodToken}}, 0, "alice (bearer)"},
		{"right API key", http.Header{"X-Api-Key": {goodAPIKey}}, 0, "batch-job (apikey)"},
	}
	for _, p := range icProtocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			client := p.gomsClient(t, run.URL("gateway"))
			for _, tc := range cases {
				req := connect.NewRequest(&gomsv1.DeleteRequest{Id: "0123456789abcdef"})
				for k, v := range tc.header {
					req.Header()[k] = v
				}
				res, err := client.Delete(t.Context(), req)
				if tc.wantCode != 0 {
					wantAuthError(t, tc.name, err, tc.wantCode)
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
					continue
				}
				if got := res.Header().Get("X-Subject"); got != tc.wantSub {
					t.Errorf("%s: handler saw %q, want %q", tc.name, got, tc.wantSub)
				}
			}

			// Denied is denied whatever the credentials.
			req := connect.NewRequest(&gomsv1.UpdateRequest{Id: "0123456789abcdef", Name: "x"})
			req.Header().Set("Authorization", "Bearer "+goodToken)
			_, err := client.Update(t.Context(), req)
			wantAuthError(t, "denied method", err, connect.CodePermissionDenied)

			// Public methods need nothing, and ignore bad credentials.
			for _, h := range []string{"", "Bearer wrong-token"} {
				req := connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"})
				if h != "" {
					req.Header().Set("Authorization", h)
				}
				res, err := client.Get(t.Context(), req)
				if err != nil {
					t.Fatalf("public Get with %q: %v", h, err)
				}
				if got := res.Msg.GetItem().GetName(); got != "anonymous" {
					t.Errorf("public Get with %q: identity %q", h, got)
				}
			}
		})
	}
}

// wantAuthError fails the test unless err has code and a message that
// says nothing but the code.
func wantAuthError(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("%s: got %v, want %v", what, err, code)
		return
	}
	if ce.Code() != code {
		t.Errorf("%s: got %v, want %v", what, ce.Code(), code)
	}
	if msg := ce.Message(); msg != "unauthenticated" && msg != "permission denied" {
		t.Errorf("%s: message %q says more than the code", what, msg)
	}
	for _, secret := range []string{"token", "key", "alice", "Delete", "Update"} {
		if strings.Contains(ce.Message(), secret) {
			t.Errorf("%s: message %q leaks %q", what, ce.Message(), secret)
		}
	}
	if len(ce.Details()) != 0 {
		t.Errorf("%s: %d error details, want none", what, len(ce.Details()))
	}
}

func TestAuthDefaults(t *testing.T) {
	t.Parallel()
	// Default is authenticated; health stays public.
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Auth:      goms.Auth{Verifier: testVerifier, APIKeyHeader: "x-my-key"},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(identityService{}, srv.HandlerOptions()...))
	})
	client := icProtocols[1].gomsClient(t, run.URL("gateway"))
	_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "x"}))
	wantAuthError(t, "default policy", err, connect.CodeUnauthenticated)
	req := connect.NewRequest(&gomsv1.GetRequest{Id: "x"})
	req.Header().Set("X-My-Key", goodAPIKey)
	if _, err := client.Get(t.Context(), req); err != nil {
		t.Errorf("API key in a custom header: %v", err)
	}
	health := connect.NewClient[grpc_health_v1.HealthCheckRequest, grpc_health_v1.HealthCheckResponse](
		gomstest.H2C(t), run.URL("gateway")+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	if _, err := health.CallUnary(t.Context(), connect.NewRequest(&grpc_health_v1.HealthCheckRequest{})); err != nil {
		t.Errorf("health check: %v", err)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		auth    goms.Auth
		atNew   bool
		wantErr string
	}{
		{"bad default", goms.Auth{Default: "open", Verifier: testVerifier}, true, `goms: auth.default: policy "open"`},
		{"bad policy", goms.Auth{Policies: map[string]string{"goms.v1.GoMsService": "maybe"}, Verifier: testVerifier}, true, `goms: auth.policies["goms.v1.GoMsService"]: policy "maybe"`},
		{"no way to authenticate", goms.Auth{Default: "authenticated"}, true, "no verifier and no listener with client_ca_file"},
		{"unknown method", goms.Auth{Policies: map[string]string{"goms.v1.GoMsService/Nope": "denied"}, Verifier: testVerifier}, false, `goms: auth.policies["goms.v1.GoMsService/Nope"]: no mounted service has this method`},
		{"unknown service", goms.Auth{Policies: map[string]string{"nope.v1.Nope": "denied"}, Verifier: testVerifier}, false, `goms: auth.policies["nope.v1.Nope"]: no such service is mounted`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, err := goms.New(goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0"}}, Auth: tc.auth})
			if tc.atNew {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := gomstest.MountTestServices(srv); err != nil {
				t.Fatal(err)
			}
			err = srv.Listen()
			if err == nil {
				_ = srv.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Listen: got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	_, err := goms.New(goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", ClientCAFile: "ca.pem"}}})
	if err == nil || !strings.Contains(err.Error(), `client_ca_file "ca.pem" needs TLS`) {
		t.Errorf("client_ca_file without TLS: got %v", err)
	}
}

func TestMutualTLSIdentity(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	tlsListener := func(name string, mode goms.Mode, engine goms.Engine) goms.Listener {
		return goms.Listener{Name: name, Mode: mode, Engine: engine, CertFile: pki.certFile, KeyFile: pki.keyFile, ClientCAFile: pki.caFile}
	}
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{
			tlsListener("gateway", goms.ModeGateway, ""),
			tlsListener("grpcgo", goms.ModeGRPC, goms.EngineGRPC),
		},
		// No verifier: on these listeners the certificate is the credential.
		Auth: goms.Auth{Default: "authenticated"},
	}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(identityService{}, srv.HandlerOptions()...))
	})
	cases := []struct {
		listener string
		p        icProtocol
	}{
		{"gateway", icProtocols[0]},
		{"gateway", icProtocols[1]},
		{"gateway", icProtocols[2]},
		{"grpcgo", icProtocols[1]},
	}
	for _, tc := range cases {
		t.Run(tc.listener+"/"+tc.p.name, func(t *testing.T) {
			t.Parallel()
			base := "https://" + run.Addr(tc.listener)
			h2 := tc.p.h2 || tc.listener == "grpcgo"
			client := gomsv1connect.NewGoMsServiceClient(pki.httpsClient(t, h2, pki.client), base, tc.p.opts...)
			res, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "x"}))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Msg.GetItem().GetName(), clientURI+" (mtls)"; got != want {
				t.Errorf("handler saw identity %q, want %q", got, want)
			}

			// Without a client certificate the handshake fails.
			anon := gomsv1connect.NewGoMsServiceClient(pki.httpsClient(t, h2), base, tc.p.opts...)
			if _, err := anon.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "x"})); err == nil {
				t.Error("a caller without a certificate got through")
			}
		})
	}
}

// TestAuthYAML checks that the policies load from a configuration file.
func TestAuthYAML(t *testing.T) {
	t.Parallel()
	var cfg goms.Config
	err := yaml.Unmarshal([]byte(`
auth:
  default: public
  api_key_header: X-Key
  policies:
    goms.v1.GoMsService/Delete: authenticated
    child.v1.ChildService: denied
listeners:
  - name: mtls
    address: 127.0.0.1:0
    cert_file: server.pem
    key_file: server-key.pem
    client_ca_file: ca.pem
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := goms.Auth{
		Default:      "public",
		APIKeyHeader: "X-Key",
		Policies: map[string]string{
			"goms.v1.GoMsService/Delete": "authenticated",
			"child.v1.ChildService":      "denied",
		},
	}
	if diff := cmp.Diff(want, cfg.Auth); diff != "" {
		t.Errorf("auth (-want +got):\n%s", diff)
	}
	if got := cfg.Listeners[0].ClientCAFile; got != "ca.pem" {
		t.Errorf("client_ca_file = %q", got)
	}
}
