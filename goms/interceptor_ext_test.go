package goms_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// orderPlugin records, in a shared list, that a call went through it.
type orderPlugin struct {
	name string
	mu   *sync.Mutex
	seen *[]string
}

func (p orderPlugin) Name() string                     { return p.name }
func (p orderPlugin) Interceptor() connect.Interceptor { return p }

func (p orderPlugin) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p.mu.Lock()
		*p.seen = append(*p.seen, p.name+" "+strings.TrimPrefix(req.Spec().Procedure, "/goms.v1.GoMsService/"))
		p.mu.Unlock()
		return next(ctx, req)
	}
}

func (p orderPlugin) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (p orderPlugin) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestInterceptorSelection checks that Config.Interceptors applies each
// interceptor only where it is configured, in the documented order.
func TestInterceptorSelection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cfg   goms.Interceptors
		calls []string // methods called, in order: Get, List
		want  []string
	}{
		{
			name:  "default: all, in order",
			calls: []string{"Get", "List"},
			want:  []string{"tracing Get", "validate Get", "custom Get", "tracing List", "validate List", "custom List"},
		},
		{
			name:  "explicit default, one method adds",
			cfg:   goms.Interceptors{Default: []string{"recovery"}, Rules: map[string]goms.MethodConfig{"goms.v1.GoMsService/Get": {Add: []string{"custom"}}}},
			calls: []string{"Get", "List"},
			want:  []string{"custom Get"},
		},
		{
			name: "service removes, method adds back",
			cfg: goms.Interceptors{Rules: map[string]goms.MethodConfig{
				"goms.v1.GoMsService":      {Remove: []string{"custom", "tracing"}},
				"goms.v1.GoMsService/List": {Add: []string{"custom"}},
			}},
			calls: []string{"Get", "List"},
			want:  []string{"validate Get", "validate List", "custom List"},
		},
		{
			name:  "empty default: none",
			cfg:   goms.Interceptors{Default: []string{}},
			calls: []string{"Get", "List"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var seen []string
			plugin := func(name string) goms.Plugin { return orderPlugin{name: name, mu: &mu, seen: &seen} }
			run := gomstest.Start(t, goms.Config{
				Listeners: []goms.Listener{{Name: "gateway"}},
				// Plugins in an order unlike the chain's: the chain order wins.
				Plugins:      []goms.Plugin{plugin("custom"), plugin("validate"), plugin("tracing")},
				Interceptors: tc.cfg,
			}, nil)
			client := icProtocols[0].gomsClient(t, run.URL("gateway"))
			for _, m := range tc.calls {
				var err error
				switch m {
				case "Get":
					_, err = client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
				case "List":
					_, err = client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{}))
				}
				if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("%s: %v", m, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, tc.want) {
				t.Errorf("interceptors ran as %q, want %q", seen, tc.want)
			}
		})
	}
}

// TestInterceptorSelectionErrors checks that configuration mistakes are
// reported when the server is made or starts, not at request time.
func TestInterceptorSelectionErrors(t *testing.T) {
	t.Parallel()
	custom := orderPlugin{name: "custom", mu: new(sync.Mutex), seen: new([]string)}
	cases := []struct {
		name    string
		cfg     goms.Config
		atNew   bool
		wantErr string
	}{
		{"unknown default", goms.Config{Interceptors: goms.Interceptors{Default: []string{"nope"}}}, true, `goms: interceptors.default: unknown interceptor "nope"`},
		{"unknown in rule", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{"goms.v1.GoMsService": {Add: []string{"metrics"}}}}}, true, `interceptors.rules["goms.v1.GoMsService"]: unknown interceptor "metrics"`},
		{"duplicate plugin", goms.Config{Plugins: []goms.Plugin{custom, custom}}, true, `two interceptors are named "custom"`},
		{"plugin named like a builtin", goms.Config{Plugins: []goms.Plugin{orderPlugin{name: "recovery"}}}, true, `two interceptors are named "recovery"`},
		{"unknown method", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{"goms.v1.GoMsService/Nope": {Remove: []string{"accesslog"}}}}}, false, `interceptors.rules["goms.v1.GoMsService/Nope"]: no mounted service has this method`},
		{"unknown service", goms.Config{Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{"nope.v1.Nope": {Remove: []string{"accesslog"}}}}}, false, `interceptors.rules["nope.v1.Nope"]: no such service is mounted`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Listeners = []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}}
			tc.cfg.Logger = slog.New(slog.DiscardHandler)
			srv, err := goms.New(tc.cfg)
			if tc.atNew {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
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
}
