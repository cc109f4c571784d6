// Command http runs the goms and child example services on one HTTP
// listener that serves Connect (JSON and binary), gRPC-Web and the REST
// routes (GET /goms, …), what browsers and curl use, as the original GoMs
// http example did.
package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/goms"
)

func main() {
	host := flag.String("http-host", "127.0.0.1", "HTTP listener host")
	port := flag.Int("http-port", 8080, "HTTP listener port")
	flag.Parse()
	logger := app.Logger()
	// SIGINT and SIGTERM drain and stop the server; a second one stops
	// the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	cfg := goms.Config{
		Listeners: []goms.Listener{{Name: "http", Addr: net.JoinHostPort(*host, strconv.Itoa(*port)), Mode: goms.ModeHTTP, REST: true}},
		Logger:    logger,
	}
	shutdown, err := app.Configure(ctx, &cfg)
	var srv *goms.Server
	if err == nil {
		defer func() { _ = shutdown(context.Background()) }()
		srv, err = goms.New(cfg)
	}
	if err == nil {
		// The child service calls the goms service with the Connect
		// protocol, which this listener serves.
		err = app.MountAll(srv)
	}
	if err == nil {
		err = srv.Serve(ctx)
	}
	if err != nil {
		logger.Error("http", "err", err)
		os.Exit(1)
	}
}
