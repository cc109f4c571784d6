// Command web serves the example page: a TypeScript single-page app,
// embedded in the binary, that lists, creates, renames and deletes goms
// items over Connect or gRPC-Web and shows the Watch stream live.
//
// The listener on -addr (gateway mode, REST on) serves the page at /web
// and the services. The listener on -page-addr, another origin, serves
// only the page, whose calls then cross origins to -addr: CORS there
// allows that origin and no other.
package main

import (
	"context"
	"embed"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/reversTeam/go-ms/examples/app"
	"github.com/reversTeam/go-ms/goms"
)

// The page and its bundle, built by `make web` (esbuild) and committed.
//
//go:embed index.html dist/app.js
var static embed.FS

// Paths of the page and its bundle. The page is not at "/": goms mounts
// exact paths and "/" names nothing.
const (
	pagePath   = "/web"
	bundlePath = "/web/app.js"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address of the listener that serves the page and the services (Connect, gRPC-Web, gRPC, REST)")
	pageAddr := flag.String("page-addr", "127.0.0.1:8081", `address of a listener that serves only the page, another origin calling -addr through CORS; "" for none`)
	flag.Parse()
	logger := app.Logger()
	if err := run(*addr, *pageAddr, logger); err != nil {
		logger.Error("web", "err", err)
		os.Exit(1)
	}
}

func run(addr, pageAddr string, logger *slog.Logger) error {
	// SIGINT and SIGTERM drain and stop the server; a second one stops
	// the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	web := goms.Listener{Name: "web", Addr: addr, Mode: goms.ModeGateway, REST: true}
	listeners := []goms.Listener{web}
	if pageAddr != "" {
		if _, port, err := net.SplitHostPort(pageAddr); err != nil || port == "0" {
			return fmt.Errorf("-page-addr %q: want host:port with a fixed port, the origin CORS allows", pageAddr)
		}
		listeners[0].CORS = goms.CORS{
			AllowedOrigins: []string{"http://" + pageAddr},
			AllowedHeaders: []string{"Authorization"},
			ExposedHeaders: []string{"X-Request-Id"},
		}
		listeners = append(listeners, goms.Listener{Name: "page", Addr: pageAddr, Mode: goms.ModeHTTP})
	}
	cfg := goms.Config{Listeners: listeners, Logger: logger}
	shutdown, err := app.Configure(ctx, &cfg)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	srv, err := goms.New(cfg)
	if err != nil {
		return err
	}
	if err := app.MountOn(srv, []string{"web"}); err != nil {
		return err
	}
	index := staticFile("index.html", "text/html; charset=utf-8")
	bundle := staticFile("dist/app.js", "text/javascript; charset=utf-8")
	if err := srv.MountOn([]string{"web"}, pagePath, index); err != nil {
		return err
	}
	if err := srv.MountOn(nil, bundlePath, bundle); err != nil {
		return err
	}
	if pageAddr != "" {
		// Without ?api=, the other origin's page calls -addr.
		crossOrigin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("api") == "" {
				q := r.URL.Query()
				q.Set("api", "http://"+srv.Addr("web").String())
				http.Redirect(w, r, pagePath+"?"+q.Encode(), http.StatusFound)
				return
			}
			index.ServeHTTP(w, r)
		})
		if err := srv.MountOn([]string{"page"}, pagePath, crossOrigin); err != nil {
			return err
		}
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if os.Getenv(app.TokenEnv) == "" {
		logger.Warn("web: " + app.TokenEnv + " is not set: Delete is refused to everyone")
	}
	logger.Info("web: open the page", "url", "http://"+srv.Addr("web").String()+pagePath)
	if pageAddr != "" {
		logger.Info("web: or from another origin, through CORS", "url", "http://"+srv.Addr("page").String()+pagePath)
	}
	return srv.Serve(ctx)
}

// staticFile serves one embedded file to GET and HEAD requests.
func staticFile(name, contentType string) http.Handler {
	data, err := static.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodGet {
			_, _ = w.Write(data)
		}
	})
}
