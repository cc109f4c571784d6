package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/bench/internal/setup"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

// inProcessName names the in-process measurement for -run.
const inProcessName = "in-process vs loopback"

// maxInProcessCalls bounds the calls of one window, whatever its length.
const maxInProcessCalls = 1 << 24

// callSample is what one window of back-to-back calls from one goroutine
// measured.
type callSample struct {
	calls      int64
	elapsed    time.Duration
	cpuPerCall time.Duration // of this whole process: client and server
	// otherClient is the share of this process's CPUs that other
	// processes used meanwhile, when bound.
	otherClient float64
}

// inProcessResult holds the samples of both calls, one per round.
type inProcessResult struct {
	inProcess, loopback []callSample
}

// measured reports whether both calls have samples.
func (r inProcessResult) measured() bool {
	return len(r.inProcess) > 0 && len(r.inProcess) == len(r.loopback)
}

// measureInProcess starts, in this process, a goms server of the default
// stack (setup.Config, as benchserver's goms-default) and times unary Get
// calls to it made back to back by one goroutine: through srv.Client,
// in-process, and through a connect-go gRPC client over a loopback h2c
// connection to its grpc listener. The two alternate, cfg.rounds times,
// each a warm-up then a window of cfg.duration. clientCPUs, when not nil,
// are the CPUs this process is bound to.
func measureInProcess(ctx context.Context, cfg config, clientCPUs []int) (res inProcessResult, err error) {
	svc := gomsservice.New()
	name := admin.ItemNames()[admin.PayloadSmall]
	created, err := svc.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
	if err != nil {
		return res, fmt.Errorf("creating the item: %w", err)
	}
	req := &gomsv1.GetRequest{Id: created.Msg.GetItem().GetId()}
	// Warnings and errors only: not the server's start and stop records.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := goms.New(setup.Config("127.0.0.1", goms.EngineNetHTTP, logger))
	if err != nil {
		return res, err
	}
	if err := setup.Mount(srv, svc); err != nil {
		return res, err
	}
	if err := srv.Listen(); err != nil {
		return res, err
	}
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	defer func() {
		stop()
		if serveErr := <-served; serveErr != nil && err == nil {
			err = serveErr
		}
	}()

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	transport := &http.Transport{
		Protocols:          &h2c,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}
	defer transport.CloseIdleConnections()
	inProcess, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	clients := []struct {
		name    string
		client  gomsv1connect.GoMsServiceClient
		samples *[]callSample
	}{
		{"in-process", gomsv1connect.NewGoMsServiceClient(inProcess, baseURL, connect.WithGRPC()), &res.inProcess},
		{"loopback h2c", gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: transport},
			"http://"+srv.Addr(setup.ListenerGRPC).String(), connect.WithGRPC()), &res.loopback},
	}
	for round := range cfg.rounds {
		for _, c := range clients {
			s, err := timeCalls(ctx, cfg, clientCPUs, func() error {
				out, err := c.client.Get(ctx, connect.NewRequest(req))
				if err != nil {
					return err
				}
				if got := len(out.Msg.GetItem().GetName()); got != len(name) {
					return fmt.Errorf("got an item name of %d bytes, want %d", got, len(name))
				}
				return nil
			})
			if err != nil {
				return res, fmt.Errorf("%s: %w", c.name, err)
			}
			logf("round %d/%d, %s, %s: %.0f calls/s, %.1f µs CPU/call (client and server); other processes: %.0f%% of the client CPU",
				round+1, cfg.rounds, inProcessName, c.name, float64(s.calls)/s.elapsed.Seconds(), micros(s.cpuPerCall), 100*s.otherClient)
			*c.samples = append(*c.samples, s)
			if err := sleepCtx(ctx, cfg.pause); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// timeCalls runs call back to back for cfg.warmup, then for a window of
// cfg.duration (at most maxInProcessCalls calls), and returns the CPU time
// of this process per call of the window. Any failed call fails it.
func timeCalls(ctx context.Context, cfg config, cpus []int, call func() error) (callSample, error) {
	var s callSample
	for end := time.Now().Add(cfg.warmup); time.Now().Before(end); {
		if err := call(); err != nil {
			return s, err
		}
	}
	var before, after cpuTimes
	var err error
	if cpus != nil {
		if before, err = readCPUTimes(cpus); err != nil {
			return s, err
		}
	}
	cpu0, err := selfCPU()
	if err != nil {
		return s, err
	}
	start := time.Now()
	for s.calls < maxInProcessCalls && time.Since(start) < cfg.duration {
		if err := call(); err != nil {
			return s, err
		}
		s.calls++
	}
	s.elapsed = time.Since(start)
	cpu1, err := selfCPU()
	if err != nil {
		return s, err
	}
	if cpus != nil {
		if after, err = readCPUTimes(cpus); err != nil {
			return s, err
		}
		s.otherClient = otherLoad(before, after, cpu1-cpu0)
	}
	if s.calls == 0 {
		return s, errors.New("no call completed in the window")
	}
	if err := ctx.Err(); err != nil {
		return s, err
	}
	s.cpuPerCall = (cpu1 - cpu0) / time.Duration(s.calls)
	return s, nil
}
