package goms_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// TestMountOn checks that a service mounted on some listeners is served
// there only: the others answer CodeUnimplemented, as for any unknown
// procedure.
func TestMountOn(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}, {Name: "b"}, {Name: "c"}}}, func(srv *goms.Server) error {
		path, handler := gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)
		return srv.MountOn([]string{"b", "c"}, path, handler)
	})
	for _, c := range []struct {
		listener string
		want     connect.Code
	}{{"a", connect.CodeUnimplemented}, {"b", connect.CodeNotFound}, {"c", connect.CodeNotFound}} {
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL(c.listener), connect.WithGRPC())
		_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: unknownID}))
		if got := connect.CodeOf(err); got != c.want {
			t.Errorf("listener %q: Get: %v, want %v", c.listener, err, c.want)
		}
	}
}

// TestMountPlain checks plain HTTP routes: exact paths, reached by every
// protocol on every mode, and RPC services whose descriptors goms does not
// know, which get every method under their path.
func TestMountPlain(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, allModes(), func(srv *goms.Server) error {
		return errors.Join(
			srv.Mount("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "metrics "+r.Method)
			})),
			srv.Mount("/unregistered.v1.Thing/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "thing "+r.URL.Path)
			})),
		)
	})
	client := gomstest.HTTP1(t)
	do := func(t *testing.T, method, url, contentType string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(body)
	}
	for _, listener := range []string{"grpc", "grpcgo", "http", "gateway"} {
		t.Run(listener, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
				if code, body := do(t, method, srv.URL(listener)+"/metrics", "text/plain"); code != http.StatusOK || body != "metrics "+method {
					t.Errorf("%s /metrics: %d %q", method, code, body)
				}
			}
			// Plain routes are exact: a longer path is an unknown procedure
			// (404, as the Connect protocol asks), or a protocol the mode
			// rejects (501).
			want := http.StatusNotFound
			if strings.HasPrefix(listener, "grpc") {
				want = http.StatusNotImplemented
			}
			if code, body := do(t, http.MethodGet, srv.URL(listener)+"/metrics/more", ""); code != want {
				t.Errorf("GET /metrics/more: %d %q, want %d", code, body, want)
			}
		})
	}
	t.Run("unregistered-service", func(t *testing.T) {
		code, body := do(t, http.MethodPost, srv.URL("gateway")+"/unregistered.v1.Thing/Any", "application/json")
		if code != http.StatusOK || body != "thing /unregistered.v1.Thing/Any" {
			t.Errorf("POST /unregistered.v1.Thing/Any: %d %q", code, body)
		}
		// The protocol filter still applies to it.
		code, body = do(t, http.MethodPost, srv.URL("grpc")+"/unregistered.v1.Thing/Any", "application/json")
		if code != http.StatusNotImplemented || !strings.Contains(body, `does not accept Connect requests`) {
			t.Errorf("Connect POST on the grpc listener: %d %q, want 501", code, body)
		}
	})
}

// TestMountErrors checks that a bad Mount or MountOn returns an error, that
// Listen then returns it too, and that nothing listens.
func TestMountErrors(t *testing.T) {
	t.Parallel()
	handler := http.NotFoundHandler()
	cases := []struct {
		name  string
		mount func(*goms.Server) error
		want  string
	}{
		{"empty-path", func(s *goms.Server) error { return s.Mount("", handler) }, `must start with "/"`},
		{"relative-path", func(s *goms.Server) error { return s.Mount("metrics", handler) }, `must start with "/"`},
		{"root", func(s *goms.Server) error { return s.Mount("/", handler) }, `must start with "/"`},
		{"bad-service-name", func(s *goms.Server) error { return s.Mount("/bad name/", handler) }, "fully-qualified"},
		{"nested-service-path", func(s *goms.Server) error { return s.Mount("/a.B/c/", handler) }, "fully-qualified"},
		{"nil-handler", func(s *goms.Server) error { return s.Mount("/metrics", nil) }, "nil handler"},
		{"duplicate", func(s *goms.Server) error {
			if err := s.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs())); err != nil {
				return err
			}
			return s.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs()))
		}, `"/goms.v1.GoMsService/": already mounted on listener "a"`},
		{"duplicate-on-one-listener", func(s *goms.Server) error {
			if err := s.MountOn([]string{"b"}, "/metrics", handler); err != nil {
				return err
			}
			return s.Mount("/metrics", handler)
		}, `already mounted on listener "b"`},
		{"builtin-path", func(s *goms.Server) error { return s.Mount("/healthz", handler) }, "already mounted"},
		{"unknown-listener", func(s *goms.Server) error { return s.MountOn([]string{"a", "nope"}, "/metrics", handler) }, `unknown listener "nope" (have "a", "b")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}, {Name: "b"}}})
			err := c.mount(srv)
			if c.name == "builtin-path" {
				// The builtins are mounted by Listen, which reports the clash.
				if err != nil {
					t.Fatalf("Mount: %v", err)
				}
				err = srv.Listen()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "goms: ") {
				t.Fatalf("got %v, want an error starting with \"goms: \" containing %q", err, c.want)
			}
			if lerr := srv.Listen(); lerr == nil || !strings.Contains(lerr.Error(), c.want) {
				t.Errorf("Listen after the failed mount: %v, want the mount error", lerr)
			}
			if addr := srv.Addr("a"); addr != nil {
				t.Errorf("listener a is bound to %v after a failed Listen", addr)
			}
		})
	}
}

// TestMountAfterListen checks that the routes are fixed once the server
// listens, and that a closed server reports ErrServerClosed.
func TestMountAfterListen(t *testing.T) {
	t.Parallel()
	srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}})
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs()))
	if err == nil || !strings.Contains(err.Error(), "already listens") {
		t.Errorf("Mount after Listen: %v, want an error", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err = srv.Mount("/metrics", http.NotFoundHandler())
	if !errors.Is(err, goms.ErrServerClosed) {
		t.Errorf("Mount after Close: %v, want ErrServerClosed (as its doc says)", err)
	}
}
