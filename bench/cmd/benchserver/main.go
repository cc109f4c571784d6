// Command benchserver serves goms.v1.GoMsService, implemented by
// gomsservice, for the load benchmark, in one of these setups (-kind):
//
//   - goms: the examples/gateway setup, a grpc-mode listener (net/http
//     engine) and an http-mode listener with GoMsService and ChildService
//     mounted with the server's HandlerOptions, and app.Configure's
//     plugins and auth;
//   - goms-grpcengine: the same with goms.EngineGRPC on the grpc listener;
//   - goms-nointerceptors: the goms setup with no interceptor selected
//     (Interceptors.Default empty), to tell the cost of the interceptors
//     from that of the rest of goms;
//   - goms-default: the same listeners and services with no plugin and no
//     auth, so goms.New's default interceptors only (recovery, and the
//     access log with its records at debug, which the logger at info
//     leaves out);
//   - goms-observed: goms-default plus Prometheus metrics, tracing on with
//     sampling off, and the access log written, a JSON record per call, to
//     a file of os.TempDir() named in the hello line (goms's buffered
//     Log.AccessFile);
//   - connect: the bare connect-go handler on a net/http server speaking
//     HTTP/1.1 and h2c.
//
// It listens on free ports of -host, creates the benchmark items, then
// prints an admin.Hello line on stdout and serves until SIGINT or SIGTERM.
// The grpc-go references are in cmd/grpcserver: they link another copy of
// the generated messages, which cannot share a process with gen/goms/v1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

func main() {
	kind := flag.String("kind", "", "server setup: "+kindList)
	host := flag.String("host", "127.0.0.1", "host of the listeners (ports are chosen free)")
	adminAddr := flag.String("admin", "127.0.0.1:0", "address of the admin (stats) endpoint")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	stopProfile, err := admin.Profile(*cpuProfile)
	if err == nil {
		err = run(*kind, *host, *adminAddr)
		err = errors.Join(err, stopProfile())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

func run(kind, host, adminAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal stops the process at once
	defer stop()
	svc := gomsservice.New()
	ids, err := seed(ctx, svc)
	if err != nil {
		return err
	}
	adminBound, err := admin.Serve(adminAddr)
	if err != nil {
		return err
	}
	hello := admin.Hello{Admin: adminBound, IDs: ids}
	if s, ok := gomsSetups[kind]; ok {
		return serveGoms(ctx, svc, host, s, hello)
	}
	if kind == "connect" {
		return serveConnect(ctx, svc, host, hello)
	}
	return fmt.Errorf("-kind %q: want %s", kind, kindList)
}

// kindList names the values of -kind.
const kindList = "goms, goms-grpcengine, goms-nointerceptors, goms-default, goms-observed or connect"

// seed creates the item of every payload and returns their ids.
func seed(ctx context.Context, svc *gomsservice.Service) (map[string]string, error) {
	ids := make(map[string]string)
	for payload, name := range admin.ItemNames() {
		res, err := svc.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
		if err != nil {
			return nil, fmt.Errorf("creating the %s item: %w", payload, err)
		}
		ids[payload] = res.Msg.GetItem().GetId()
	}
	return ids, nil
}

// serveConnect runs the generated connect handler alone, with connect-go's
// defaults, on a net/http server that speaks HTTP/1.1 and h2c.
func serveConnect(ctx context.Context, svc *gomsservice.Service, host string, hello admin.Hello) error {
	mux := http.NewServeMux()
	mux.Handle(gomsv1connect.NewGoMsServiceHandler(svc))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	hello.Addrs = map[string]string{admin.EndpointGRPC: addr, admin.EndpointHTTP: addr}
	if err := admin.Announce(hello); err != nil {
		return err
	}
	return serveUntil(ctx, func() error { return hs.Serve(ln) }, hs.Shutdown)
}

// serveUntil runs serve until ctx ends, then shuts down.
func serveUntil(ctx context.Context, serve func() error, shutdown func(context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
