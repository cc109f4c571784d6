// Command server is the goms server that the fault and load tests of
// package goms run as a separate process, so that they can signal it and
// measure its memory: the test services on four loopback listeners
// (gRPC on each engine, Connect and gRPC-Web, and an admin listener with
// pprof), every port chosen by the system.
//
// Once it listens, it prints the listeners' addresses as one JSON object on
// standard output, {"grpc": "127.0.0.1:…", "grpc-nethttp": …, "http": …,
// "admin": …}, and it stops gracefully on SIGTERM or SIGINT, exiting 0
// when the shutdown went through. With -access-log it writes one JSON
// record per call on standard error.
//
// For the fault tests: -grpc-addr fixes the grpc listener's address (to
// restart on it); -no-service runs without the service, as a bad deploy
// would; -edge exposes the service of the given endpoints instead of
// serving it; and POST /fault?mode=M on the admin listener makes every
// call of the service from then on slow (200ms more), fail with
// unavailable or internal, or behave again (none).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/internal/testservice"
)

func main() {
	var cfg goms.Config
	flag.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", time.Second, "grace period of calls in flight when the server stops")
	flag.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", 0, "goms.Config.ReadHeaderTimeout (0: goms's default)")
	flag.DurationVar(&cfg.IdleTimeout, "idle-timeout", 0, "goms.Config.IdleTimeout (0: goms's default)")
	createDelay := flag.Duration("create-delay", 0, "how long each Create call takes, so that calls are in flight when the server stops")
	accessLog := flag.Bool("access-log", false, "write one JSON record per call on standard error")
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:0", "address of the grpc listener")
	noService := flag.Bool("no-service", false, "serve no service, as a bad deploy would")
	edge := flag.String("edge", "", "comma-separated endpoints whose GoMsService the grpc and http listeners expose, instead of serving it")
	flag.DurationVar(&cfg.DrainDelay, "drain-delay", 0, "goms.Config.DrainDelay")
	flag.Parse()

	level := slog.LevelDebug
	if *accessLog {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg.Log.AccessLevel = &level
	cfg.Listeners = []goms.Listener{
		{Name: "grpc", Addr: *grpcAddr, Mode: goms.ModeGRPC, Engine: goms.EngineGRPC},
		{Name: "grpc-nethttp", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC, Engine: goms.EngineNetHTTP},
		{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP},
	}
	cfg.Admin = goms.Admin{Addr: "127.0.0.1:0", Pprof: true}
	if *edge != "" {
		cfg.Remotes = []goms.Remote{{
			Name: "goms", Service: gomsv1connect.GoMsServiceName,
			Targets: strings.Split(*edge, ","), Expose: []string{"grpc", "http"},
		}}
	}
	if err := run(cfg, *createDelay, *noService); err != nil {
		cfg.Logger.Error("server", "err", err)
		os.Exit(1)
	}
}

func run(cfg goms.Config, createDelay time.Duration, noService bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal stops the process at once
	defer stop()
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	svc := &delayedService{GoMs: testservice.NewGoMs(), delay: createDelay}
	var f fault
	if !noService {
		opts := append(srv.HandlerOptions(), connect.WithInterceptors(&f))
		if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, opts...)); err != nil {
			return err
		}
	}
	if err := srv.MountOn([]string{"admin"}, "/fault", &f); err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	addrs := make(map[string]string)
	for _, name := range []string{"grpc", "grpc-nethttp", "http", "admin"} {
		addrs[name] = srv.Addr(name).String()
	}
	if err := json.NewEncoder(os.Stdout).Encode(addrs); err != nil {
		_ = srv.Close()
		return fmt.Errorf("writing the addresses: %w", err)
	}
	return srv.Serve(ctx)
}

// delayedService is the test service whose Create takes delay, or
// less when its caller gives up or the server cuts it.
type delayedService struct {
	*testservice.GoMs
	delay time.Duration
}

func (s *delayedService) Create(ctx context.Context, req *connect.Request[gomsv1.CreateRequest]) (*connect.Response[gomsv1.CreateResponse], error) {
	if s.delay > 0 {
		t := time.NewTimer(s.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.GoMs.Create(ctx, req)
}

// fault is what the admin route /fault makes the service's calls do.
type fault struct{ mode atomic.Value }

func (f *fault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch mode := r.URL.Query().Get("mode"); mode {
	case "none", "slow", "unavailable", "internal":
		f.mode.Store(mode)
	default:
		http.Error(w, "mode: none, slow, unavailable or internal", http.StatusBadRequest)
	}
}

// apply delays or fails a call as the mode says.
func (f *fault) apply(ctx context.Context) error {
	mode, _ := f.mode.Load().(string)
	switch mode {
	case "slow":
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	case "unavailable":
		return connect.NewError(connect.CodeUnavailable, errors.New("fault: unavailable"))
	case "internal":
		return connect.NewError(connect.CodeInternal, errors.New("fault: internal"))
	}
	return nil
}

func (f *fault) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := f.apply(ctx); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (f *fault) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (f *fault) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := f.apply(ctx); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
