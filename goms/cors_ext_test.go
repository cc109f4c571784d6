package goms_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

const (
	allowedOrigin    = "http://app.example"
	disallowedOrigin = "http://evil.example"
)

// startCORS serves the test services on an http listener and a
// gateway listener with REST, both allowing allowedOrigin, and on an
// http listener without CORS.
func startCORS(t *testing.T) *gomstest.Running {
	t.Helper()
	cors := goms.CORS{
		AllowedOrigins: []string{allowedOrigin, "http://*.wild.example"},
		AllowedHeaders: []string{"Authorization"},
		ExposedHeaders: []string{"X-Request-Id"},
	}
	return gomstest.Start(t, goms.Config{Listeners: []goms.Listener{
		{Name: "http", Mode: goms.ModeHTTP, CORS: cors},
		{Name: "gateway", Mode: goms.ModeGateway, CORS: cors, REST: true},
		{Name: "nocors", Mode: goms.ModeHTTP},
	}}, nil)
}

// corsProtocol is how a browser client of one protocol calls List.
type corsProtocol struct {
	name    string
	headers []string // the non-simple headers its requests carry
	opts    []connect.ClientOption
}

var corsProtocols = []corsProtocol{
	{"connect", []string{"Connect-Protocol-Version", "Content-Type"}, []connect.ClientOption{connect.WithProtoJSON()}},
	{"grpcweb", []string{"Content-Type", "X-Grpc-Web", "X-User-Agent"}, []connect.ClientOption{connect.WithGRPCWeb()}},
}

// preflight sends the OPTIONS request a browser sends before a
// cross-origin call.
func preflight(t *testing.T, url, origin, method string, headers ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodOptions, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", method)
	if len(headers) > 0 {
		// As browsers send it: lower case, sorted, no spaces.
		names := strings.Split(strings.ToLower(strings.Join(headers, ",")), ",")
		slices.Sort(names)
		req.Header.Set("Access-Control-Request-Headers", strings.Join(names, ","))
	}
	res, err := gomstest.HTTP1(t).Do(req)
	if err != nil {
		t.Fatalf("OPTIONS %s: %v", url, err)
	}
	_ = res.Body.Close()
	return res
}

// corsHeaders returns the Access-Control-* headers of h.
func corsHeaders(h http.Header) http.Header {
	out := make(http.Header)
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

// listHas reports whether a comma-separated header value lists name.
func listHas(value, name string) bool {
	return slices.ContainsFunc(strings.Split(value, ","), func(s string) bool {
		return strings.EqualFold(strings.TrimSpace(s), name)
	})
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	srv := startCORS(t)
	for _, p := range corsProtocols {
		for _, listener := range []string{"http", "gateway"} {
			url := srv.URL(listener) + "/goms.v1.GoMsService/List"
			t.Run(p.name+"/"+listener+"/allowed", func(t *testing.T) {
				t.Parallel()
				res := preflight(t, url, allowedOrigin, "POST", append(p.headers, "Authorization")...)
				if res.StatusCode != http.StatusNoContent {
					t.Fatalf("status %d, want 204", res.StatusCode)
				}
				h := res.Header
				if got := h.Get("Access-Control-Allow-Origin"); got != allowedOrigin {
					t.Fatalf("Access-Control-Allow-Origin %q, want %q (headers %v)", got, allowedOrigin, h)
				}
				if !listHas(h.Get("Access-Control-Allow-Methods"), "POST") {
					t.Errorf("Access-Control-Allow-Methods %q lacks POST", h.Get("Access-Control-Allow-Methods"))
				}
				for _, name := range append(p.headers, "Authorization") {
					if !listHas(h.Get("Access-Control-Allow-Headers"), name) {
						t.Errorf("Access-Control-Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), name)
					}
				}
				if got := h.Get("Access-Control-Max-Age"); got != "7200" {
					t.Errorf("Access-Control-Max-Age %q, want 7200", got)
				}
				if !listHas(strings.Join(h.Values("Vary"), ","), "Origin") {
					t.Errorf("Vary %q lacks Origin", h.Values("Vary"))
				}
			})
			t.Run(p.name+"/"+listener+"/disallowed", func(t *testing.T) {
				t.Parallel()
				res := preflight(t, url, disallowedOrigin, "POST", p.headers...)
				if got := corsHeaders(res.Header); len(got) > 0 {
					t.Fatalf("a disallowed origin got CORS headers %v", got)
				}
			})
		}
		t.Run(p.name+"/nocors", func(t *testing.T) {
			t.Parallel()
			res := preflight(t, srv.URL("nocors")+"/goms.v1.GoMsService/List", allowedOrigin, "POST", p.headers...)
			if got := corsHeaders(res.Header); len(got) > 0 {
				t.Fatalf("a listener without CORS sent CORS headers %v", got)
			}
		})
	}
	t.Run("wildcard", func(t *testing.T) {
		t.Parallel()
		res := preflight(t, srv.URL("http")+"/goms.v1.GoMsService/List", "http://a.wild.example", "POST", "Content-Type")
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "http://a.wild.example" {
			t.Fatalf("Access-Control-Allow-Origin %q for an origin matching http://*.wild.example", got)
		}
	})
	t.Run("header not allowed", func(t *testing.T) {
		t.Parallel()
		res := preflight(t, srv.URL("http")+"/goms.v1.GoMsService/List", allowedOrigin, "POST", "Content-Type", "X-Secret")
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("a preflight for a header nobody allowed got Access-Control-Allow-Origin %q", got)
		}
	})
	// REST methods are allowed where REST is served, and only there.
	for _, tt := range []struct {
		listener string
		allowed  bool
	}{{"gateway", true}, {"http", false}} {
		t.Run("PATCH/"+tt.listener, func(t *testing.T) {
			t.Parallel()
			res := preflight(t, srv.URL(tt.listener)+"/goms/"+unknownID, allowedOrigin, "PATCH", "Content-Type")
			if got := res.Header.Get("Access-Control-Allow-Origin") != ""; got != tt.allowed {
				t.Fatalf("PATCH allowed %v, want %v (headers %v)", got, tt.allowed, corsHeaders(res.Header))
			}
		})
	}
}

// originTransport adds an Origin header to requests and keeps the
// response headers of the last one.
type originTransport struct {
	origin string
	next   http.RoundTripper
	last   chan http.Header
}

func (o originTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Origin", o.origin)
	res, err := o.next.RoundTrip(req)
	if err == nil {
		select {
		case o.last <- res.Header:
		default:
		}
	}
	return res, err
}

func TestCORSActualRequests(t *testing.T) {
	t.Parallel()
	srv := startCORS(t)
	for _, p := range corsProtocols {
		for _, listener := range []string{"http", "gateway", "nocors"} {
			for _, origin := range []string{allowedOrigin, disallowedOrigin} {
				allowed := origin == allowedOrigin && listener != "nocors"
				name := p.name + "/" + listener + "/" + strings.TrimPrefix(origin, "http://")
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					tr := originTransport{origin: origin, next: gomstest.HTTP1(t).Transport, last: make(chan http.Header, 1)}
					client := gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: tr}, srv.URL(listener), p.opts...)
					ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
					defer cancel()
					// The server answers either way: CORS only tells the
					// browser whether the page may read the answer.
					if _, err := client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
						t.Fatalf("List: %v", err)
					}
					var h http.Header
					select {
					case h = <-tr.last:
					case <-time.After(callTimeout):
						t.Fatal("no response headers")
					}
					if !allowed {
						if got := corsHeaders(h); len(got) > 0 {
							t.Fatalf("got CORS headers %v", got)
						}
						return
					}
					if got := h.Get("Access-Control-Allow-Origin"); got != origin {
						t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, origin)
					}
					exposed := h.Get("Access-Control-Expose-Headers")
					for _, name := range []string{"Grpc-Status", "Grpc-Message", "X-Request-Id"} {
						if !listHas(exposed, name) {
							t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, name)
						}
					}
				})
			}
		}
	}
	// A REST call from an allowed origin gets its CORS headers too.
	r := rest(t, gomstest.HTTP1(t), "POST", srv.URL("gateway")+"/goms", `{"name":"cors-rest"}`, "Origin", allowedOrigin)
	r.wantStatus(t, "POST /goms", http.StatusOK, "")
	if got := r.header.Get("Access-Control-Allow-Origin"); got != allowedOrigin {
		t.Fatalf("REST: Access-Control-Allow-Origin %q, want %q", got, allowedOrigin)
	}
}

func TestCORSConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		listener goms.Listener
		want     string
	}{
		{"grpc mode", goms.Listener{Mode: goms.ModeGRPC, CORS: goms.CORS{AllowedOrigins: []string{allowedOrigin}}},
			`goms: listener "l": rest, openapi and cors need mode "http" or "gateway"`},
		{"no scheme", goms.Listener{CORS: goms.CORS{AllowedOrigins: []string{"app.example"}}},
			`goms: listener "l": cors: allowed_origins: "app.example": want "scheme://host"`},
		{"path", goms.Listener{CORS: goms.CORS{AllowedOrigins: []string{"http://app.example/"}}},
			`cors: allowed_origins: "http://app.example/"`},
		{"two wildcards", goms.Listener{CORS: goms.CORS{AllowedOrigins: []string{"http://*.*.example"}}},
			`at most one "*"`},
		{"negative max age", goms.Listener{CORS: goms.CORS{AllowedOrigins: []string{allowedOrigin}, MaxAge: -time.Second}},
			`cors: max_age: -1s is negative`},
		{"bad header", goms.Listener{CORS: goms.CORS{AllowedOrigins: []string{allowedOrigin}, AllowedHeaders: []string{"A, B"}}},
			`cors: header name "A, B"`},
		{"headers without origins", goms.Listener{CORS: goms.CORS{AllowedHeaders: []string{"Authorization"}}},
			`cors: allowed_origins is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := tt.listener
			l.Name, l.Addr = "l", "127.0.0.1:0"
			_, err := goms.New(goms.Config{Listeners: []goms.Listener{l}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestCORSAndRESTConfigFile checks that the configuration file says what
// Go code says.
func TestCORSAndRESTConfigFile(t *testing.T) {
	t.Setenv("GOMS_LISTENERS__WEB__CORS__EXPOSED_HEADERS", "[X-Request-Id]")
	cfg, err := goms.LoadConfig([]byte(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    rest: true
    cors:
      allowed_origins: ["http://app.example"]
      allowed_headers: [Authorization]
      max_age: 10m
`), "")
	if err != nil {
		t.Fatal(err)
	}
	want := goms.Listener{Name: "web", Addr: "127.0.0.1:0", REST: true, CORS: goms.CORS{
		AllowedOrigins: []string{"http://app.example"},
		AllowedHeaders: []string{"Authorization"},
		ExposedHeaders: []string{"X-Request-Id"},
		MaxAge:         10 * time.Minute,
	}}
	if diff := cmp.Diff([]goms.Listener{want}, cfg.Listeners); diff != "" {
		t.Fatalf("listeners (-want +got):\n%s", diff)
	}
}
