package goms_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// slowDelay is how long slowService takes to create items named "slow…".
const slowDelay = 300 * time.Millisecond

// slowService is the test service whose Create takes slowDelay for
// names that start with "slow", and tells when such a call has started.
type slowService struct {
	*testservice.GoMs
	started chan struct{}
}

func newSlowService() *slowService {
	return &slowService{GoMs: testservice.NewGoMs(), started: make(chan struct{}, 1)}
}

func (s *slowService) Create(ctx context.Context, req *connect.Request[gomsv1.CreateRequest]) (*connect.Response[gomsv1.CreateResponse], error) {
	if strings.HasPrefix(req.Msg.GetName(), "slow") {
		select {
		case s.started <- struct{}{}:
		default:
		}
		select {
		case <-time.After(slowDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.GoMs.Create(ctx, req)
}

// waitRefused waits until nothing accepts connections on addr any more.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGracefulShutdown checks Serve's shutdown with a unary call and a
// server stream in flight: the listeners stop accepting, the unary call
// finishes within the grace period, the stream ends with CodeUnavailable
// when the grace period is over, Serve returns nil, and the server is not
// reused.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	cases := []struct {
		name     string
		listener goms.Listener
		client   func(testing.TB) *http.Client
		opts     []connect.ClientOption
	}{
		{"grpc/h2c", goms.Listener{Name: "grpc", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP}, gomstest.H2C, []connect.ClientOption{connect.WithGRPC()}},
		{"grpcgo/h2c", goms.Listener{Name: "grpcgo", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC}, gomstest.H2C, []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb/http1", goms.Listener{Name: "http", Mode: goms.ModeHTTP}, gomstest.HTTP1, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"connect/http1", goms.Listener{Name: "http", Mode: goms.ModeHTTP}, gomstest.HTTP1, nil},
		{"connect/h2c", goms.Listener{Name: "gateway"}, gomstest.H2C, []connect.ClientOption{connect.WithProtoJSON()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			svc := newSlowService()
			srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{c.listener}, ShutdownTimeout: grace}, func(srv *goms.Server) error {
				return srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...))
			})
			client := gomsv1connect.NewGoMsServiceClient(c.client(t), srv.URL(c.listener.Name), c.opts...)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()

			watch := gomstest.NewWatcher(ctx, client)
			defer watch.Close()
			recv, create := watch.Recv, gomstest.Creator(ctx, client)
			gomstest.AwaitCreated(t, recv, create, "watch")

			type result struct {
				item *gomsv1.Item
				err  error
			}
			unary := make(chan result, 1)
			go func() {
				item, err := create("slow item")
				unary <- result{item, err}
			}()
			select {
			case <-svc.started:
			case <-ctx.Done():
				t.Fatal("the slow call did not start")
			}

			stopped := time.Now()
			srv.Stop()
			waitRefused(t, srv.Addr(c.listener.Name))

			res := <-unary
			if res.err != nil {
				t.Errorf("the call in flight failed: %v", res.err)
			} else if res.item.GetName() != "slow item" {
				t.Errorf("the call in flight returned %v", res.item)
			}

			// The stream sees the slow item created, then its end.
			var err error
			for range 10 {
				if _, err = recv(); err != nil {
					break
				}
			}
			elapsed := time.Since(stopped)
			gomstest.WantError(t, err, connect.CodeUnavailable, "shutting down")
			if elapsed < grace*9/10 || elapsed > grace+3*time.Second {
				t.Errorf("the stream ended %v after the shutdown began, want about the grace period, %v", elapsed, grace)
			}

			if err := srv.Wait(t); err != nil {
				t.Errorf("Serve: %v, want nil", err)
			}
			if err := srv.Server.Serve(t.Context()); !errors.Is(err, goms.ErrServerClosed) {
				t.Errorf("Serve again: %v, want ErrServerClosed", err)
			}
			if err := srv.Server.Listen(); !errors.Is(err, goms.ErrServerClosed) {
				t.Errorf("Listen again: %v, want ErrServerClosed", err)
			}
		})
	}
}

// TestShutdownIdle checks that a server with idle connections of every
// kind but no call in flight stops without waiting for the grace period.
// net/http's HTTP/2 server keeps an idle connection for up to one second
// after its GOAWAY (http2goAwayTimeout) unless the client hangs up first,
// which net/http's client does not: hence the 2s bound.
func TestShutdownIdle(t *testing.T) {
	t.Parallel()
	srv := gomstest.Start(t, goms.Config{Listeners: allModes().Listeners, ShutdownTimeout: 5 * time.Second}, nil)
	for _, name := range []string{"grpc", "grpcgo", "gateway"} {
		conn := dialGRPC(t, srv.Addr(name))
		if err := conn.Invoke(t.Context(), gomsv1connect.GoMsServiceListProcedure, &gomsv1.ListRequest{}, new(gomsv1.ListResponse)); err != nil {
			t.Fatalf("%s: grpc-go List: %v", name, err)
		}
	}
	for _, name := range []string{"http", "gateway"} {
		for _, client := range []*http.Client{gomstest.H2C(t), gomstest.HTTP1(t)} {
			c := gomsv1connect.NewGoMsServiceClient(client, srv.URL(name))
			if _, err := c.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
				t.Fatalf("%s: List: %v", name, err)
			}
		}
	}
	start := time.Now()
	srv.Stop()
	if err := srv.Wait(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Serve took %v to stop with only idle connections, want well under the 5s grace period", elapsed)
	}
}

// TestCloseDuringShutdown checks that Close, documented as stopping the
// server at once, does so during a graceful shutdown too, as net/http's
// Close does during Shutdown.
func TestCloseDuringShutdown(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "gateway"}}, ShutdownTimeout: grace}, nil)
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("gateway"), connect.WithGRPC())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	watch := gomstest.NewWatcher(ctx, client)
	defer watch.Close()
	recv, create := watch.Recv, gomstest.Creator(ctx, client)
	gomstest.AwaitCreated(t, recv, create, "watch")

	srv.Stop()
	waitRefused(t, srv.Addr("gateway"))
	start := time.Now()
	if err := srv.Server.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-srv.Done():
	case <-time.After(time.Second):
		t.Errorf("Serve still runs 1s after Close (grace period %v)", grace)
	}
	// Events of items created while AwaitCreated stopped may be queued.
	var err error
	for range 100 {
		if _, err = recv(); err != nil {
			break
		}
	}
	if err == nil {
		t.Error("the stream goes on after Close")
	}
	t.Logf("Serve returned %v after Close", time.Since(start))
}

// TestClose checks Close before and while serving.
func TestClose(t *testing.T) {
	t.Parallel()
	t.Run("listening", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}, {Name: "b"}}})
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		addrs := []string{srv.Addr("a").String(), srv.Addr("b").String()}
		if err := srv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, addr := range addrs {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("%s is still bound after Close: %v", addr, err)
				continue
			}
			_ = ln.Close()
		}
		if err := srv.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := srv.Serve(t.Context()); !errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("Serve after Close: %v, want ErrServerClosed", err)
		}
	})
	t.Run("new", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}})
		if err := srv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := srv.Listen(); !errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("Listen after Close: %v, want ErrServerClosed", err)
		}
		if err := srv.Serve(t.Context()); !errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("Serve after Close: %v, want ErrServerClosed", err)
		}
	})
	t.Run("serving", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}, ShutdownTimeout: 5 * time.Second}, nil)
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("a"))
		if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
			t.Fatalf("List: %v", err)
		}
		start := time.Now()
		if err := srv.Server.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := srv.Wait(t); err != nil {
			t.Errorf("Serve after Close: %v, want nil", err)
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("Serve returned %v after Close", elapsed)
		}
		if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err == nil {
			t.Error("List after Close on the old connection: no error")
		}
		// A new connection is refused.
		client = gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("a"))
		if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("List after Close: %v, want unavailable", err)
		}
	})
}

// TestServeStates checks the calls that the server's state forbids.
func TestServeStates(t *testing.T) {
	t.Parallel()
	t.Run("twice", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}}, nil)
		// Once a call went through, the first Serve runs.
		client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), srv.URL("a"))
		if _, err := client.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{})); err != nil {
			t.Fatalf("List: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second) // in case it serves
		defer cancel()
		if err := srv.Server.Serve(ctx); err == nil || errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("second Serve: %v, want an error", err)
		}
		if err := srv.Server.Listen(); err == nil || errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("Listen while serving: %v, want an error", err)
		}
	})
	t.Run("listen-twice", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}})
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		if err := srv.Listen(); err == nil {
			t.Error("second Listen: no error")
		}
	})
	t.Run("cancelled-context", func(t *testing.T) {
		t.Parallel()
		srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "a"}}})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }() // Serve listens itself
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve with a cancelled context: %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			_ = srv.Close()
			t.Fatal("Serve with a cancelled context still runs after 5s")
		}
		if err := srv.Serve(t.Context()); !errors.Is(err, goms.ErrServerClosed) {
			t.Errorf("Serve again: %v, want ErrServerClosed", err)
		}
	})
}

// TestListenPortInUse checks that a port in use fails Listen with an
// error naming the listener, and that no listener stays bound then.
func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	first := freePort(t)
	srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{
		{Name: "first", Addr: first},
		{Name: "busy", Addr: busy.Addr().String()},
	}})
	err = srv.Listen()
	if err == nil {
		_ = srv.Close()
		t.Fatal("Listen on a port in use: no error")
	}
	if !strings.Contains(err.Error(), `listener "busy"`) || !strings.Contains(err.Error(), "address already in use") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen: %v, want an EADDRINUSE error naming listener \"busy\"", err)
	}
	if addr := srv.Addr("first"); addr != nil {
		t.Errorf("Addr(first) = %v after the failed Listen, want nil", addr)
	}
	ln, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatalf("the first listener's port %s stays bound after the failed Listen: %v", first, err)
	}
	_ = ln.Close()

	// Once the port is free, the same server can listen.
	_ = busy.Close()
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen once the port is free: %v", err)
	}
	_ = srv.Close()
}

// TestNewErrors checks that New rejects bad configurations with an error
// naming the field at fault, before anything listens.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	ok := goms.Listener{Name: "ok", Addr: "127.0.0.1:0"}
	cases := []struct {
		name string
		cfg  goms.Config
		want string
	}{
		{"no-listener", goms.Config{}, "goms: listeners: need at least one listener"},
		{"empty-name", goms.Config{Listeners: []goms.Listener{{Addr: "127.0.0.1:0"}}}, "name must not be empty"},
		{"duplicate-name", goms.Config{Listeners: []goms.Listener{ok, ok}}, `goms: listener "ok": name used twice`},
		{"no-address", goms.Config{Listeners: []goms.Listener{{Name: "a"}}}, `goms: listener "a": address "": must not be empty`},
		{"address-without-port", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "nonsense"}}}, `goms: listener "a": address "nonsense": address nonsense: missing port in address`},
		{"port-out-of-range", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:99999"}}}, `goms: listener "a": address "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"port-not-a-number", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:http"}}}, `port "http" is not a number`},
		{"bad-mode", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", Mode: "rest"}}}, `goms: listener "a": mode "rest": want "grpc", "http" or "gateway"`},
		{"bad-engine", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC, Engine: "fast"}}}, `goms: listener "a": engine "fast"`},
		{"grpc-engine-on-gateway", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", Engine: goms.EngineGRPC}}}, `goms: listener "a": engine "grpc" serves grpc-mode listeners only`},
		{"cert-without-key", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", CertFile: "cert.pem"}}}, `goms: listener "a": cert_file and key_file go together`},
		{"missing-cert-files", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}}}, `goms: listener "a": loading TLS certificate`},
		{"negative-shutdown-timeout", goms.Config{Listeners: []goms.Listener{ok}, ShutdownTimeout: -time.Second}, "goms: shutdown_timeout: -1s is negative"},
		{"negative-max-message-bytes", goms.Config{Listeners: []goms.Listener{ok}, MaxMessageBytes: -1}, "goms: max_message_bytes: -1 is negative"},
		{"negative-min-body-rate-grace", goms.Config{Listeners: []goms.Listener{{Name: "a", Addr: "127.0.0.1:0", MinBodyRateGrace: -time.Second}}}, `goms: listener "a": min_body_rate_grace: -1s is negative`},
		{"unknown-reflection-listener", goms.Config{Listeners: []goms.Listener{ok}, Reflection: goms.Reflection{Listeners: []string{"nope"}}}, `goms: reflection.listeners: unknown listener "nope" (have "ok")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv, err := goms.New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error containing %q", err, c.want)
			}
			if srv != nil {
				t.Errorf("New returned a server along with its error")
			}
		})
	}
}

// TestNewKeepsConfig checks that New copies the listeners it is given, so
// that later changes of the caller's slice do not reach the server.
func TestNewKeepsConfig(t *testing.T) {
	t.Parallel()
	listeners := []goms.Listener{{Name: "a", Addr: "127.0.0.1:0"}}
	srv := gomstest.New(t, goms.Config{Listeners: listeners})
	listeners[0].Name = "changed"
	listeners[0].Addr = "nonsense"
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer srv.Close()
	if srv.Addr("a") == nil {
		t.Error(`listener "a" is gone after the caller changed its slice`)
	}
}
