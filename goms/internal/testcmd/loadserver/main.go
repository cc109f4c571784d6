// Command loadserver is the goms server that the overload tests of package
// goms drive as a separate process: goms.v1.GoMsService whose Get takes a
// configurable time (-sleep, a slow dependency) and CPU (-cpu, work of its
// own), on one gateway listener, with Prometheus metrics on an admin
// listener.
//
// Once it listens, it prints the listeners' addresses as one JSON object on
// standard output, {"rpc": "127.0.0.1:…", "admin": …}. POST
// /control/slow?factor=10&for=10s on the rpc listener multiplies the sleep
// of Get by factor for that long. It stops gracefully on SIGTERM or
// SIGINT.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
)

func main() {
	sleep := flag.Duration("sleep", 0, "how long each Get waits, as on a slow dependency")
	cpu := flag.Duration("cpu", 0, "how much CPU each Get burns, as measured on an idle core at start")
	adaptive := flag.Bool("adaptive", true, "the listener's adaptive concurrency limit")
	limit := flag.Int("limit", 0, "holds the adaptive limit at this many calls (its min and max), to measure what one limit does")
	flag.Parse()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(logger, *sleep, *cpu, *adaptive, *limit); err != nil {
		logger.Error("loadserver", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger, sleep, cpu time.Duration, adaptive bool, limit int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal stops the process at once
	defer stop()
	metrics, err := prom.New()
	if err != nil {
		return err
	}
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{
			Name: "rpc", Addr: "127.0.0.1:0",
			AdaptiveLimit: goms.AdaptiveLimit{Disabled: !adaptive, Min: limit, Max: limit},
		}},
		Admin:           goms.Admin{Addr: "127.0.0.1:0"},
		Plugins:         []goms.Plugin{metrics},
		ShutdownTimeout: time.Second,
		Logger:          logger,
	})
	if err != nil {
		return err
	}
	svc := &workService{sleep: sleep, rounds: calibrate(cpu)}
	svc.factor.Store(1)
	if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(svc, srv.HandlerOptions()...)); err != nil {
		return err
	}
	if err := srv.Mount("/control/slow", http.HandlerFunc(svc.slow)); err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	addrs := map[string]string{"rpc": srv.Addr("rpc").String(), "admin": srv.Addr("admin").String()}
	if err := json.NewEncoder(os.Stdout).Encode(addrs); err != nil {
		_ = srv.Close()
		return fmt.Errorf("writing the addresses: %w", err)
	}
	return srv.Serve(ctx)
}

// workService answers Get after sleeping and burning CPU.
type workService struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
	sleep  time.Duration
	rounds int // sha256 rounds of the CPU work
	factor atomic.Int64
	sink   atomic.Uint32
}

func (s *workService) Get(ctx context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	if d := s.sleep * time.Duration(s.factor.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	sum, err := burn(ctx, s.rounds)
	if err != nil {
		return nil, err
	}
	s.sink.Add(uint32(sum))
	return connect.NewResponse(&gomsv1.GetResponse{Item: &gomsv1.Item{Id: req.Msg.GetId()}}), nil
}

// slow multiplies the sleep of Get by ?factor= for ?for=.
func (s *workService) slow(w http.ResponseWriter, r *http.Request) {
	factor, err1 := strconv.Atoi(r.URL.Query().Get("factor"))
	d, err2 := time.ParseDuration(r.URL.Query().Get("for"))
	if err1 != nil || err2 != nil || factor < 1 {
		http.Error(w, "want ?factor=N&for=DURATION", http.StatusBadRequest)
		return
	}
	s.factor.Store(int64(factor))
	time.AfterFunc(d, func() { s.factor.Store(1) })
	w.WriteHeader(http.StatusNoContent)
}

// burn does rounds of SHA-256 over a small buffer, and stops when ctx
// ends, as a handler that checks its context between steps would.
func burn(ctx context.Context, rounds int) (byte, error) {
	var sum [32]byte
	for i := range rounds {
		if i%256 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		sum = sha256.Sum256(sum[:])
	}
	return sum[0], nil
}

// calibrate returns the rounds of burn that take d of CPU, measured here.
func calibrate(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	const probe = 20000
	best := time.Duration(1 << 62)
	for range 5 {
		start := time.Now()
		_, _ = burn(context.Background(), probe)
		best = min(best, time.Since(start))
	}
	return max(1, int(float64(probe)*float64(d)/float64(best)))
}
