package goms

import (
	"net/http"
	"net/http/pprof"
)

// adminListener is the name of the admin listener in logs, errors and
// MountOn.
const adminListener = "admin"

// Admin configures the admin listener: an HTTP/1.1 and h2c listener for
// operators that serves /healthz, /readyz, grpc.health.v1, the status
// page, the routes of admin plugins such as /metrics, and optionally
// pprof, and none of the mounted services (unless MountOn names it).
type Admin struct {
	// Addr is the listener's address, such as "127.0.0.1:4242"; empty
	// means no admin listener.
	Addr string `yaml:"address"`
	// Pprof serves net/http/pprof under /debug/pprof/. Off by default:
	// profiles reveal a lot about a process.
	Pprof bool `yaml:"pprof"`
	// DisableStatus turns off the status page, on by default: a live
	// view of the process, its listeners, services, remotes and recent
	// errors at /status (and "/"), and the same as JSON at
	// /status.json. It shows no headers and no messages.
	DisableStatus bool `yaml:"disable_status"`
}

// adminRoutes returns the plain routes of the admin listener: the status
// page (unless status is nil), those of AdminPlugins, and pprof's when
// asked.
func adminRoutes(status *statusBoard, plugins []Plugin, withPprof bool) map[string]http.Handler {
	routes := make(map[string]http.Handler)
	// The status page first: routes of admin plugins win over it.
	if status != nil {
		for path, h := range status.routes() {
			routes[path] = h
		}
	}
	for _, p := range plugins {
		if ap, ok := p.(AdminPlugin); ok {
			for path, h := range ap.AdminRoutes() {
				routes[path] = h
			}
		}
	}
	if withPprof {
		routes["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
		routes["/debug/pprof/cmdline"] = http.HandlerFunc(pprof.Cmdline)
		routes["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
		routes["/debug/pprof/symbol"] = http.HandlerFunc(pprof.Symbol)
		routes["/debug/pprof/trace"] = http.HandlerFunc(pprof.Trace)
		for _, name := range []string{"allocs", "block", "goroutine", "heap", "mutex", "threadcreate"} {
			routes["/debug/pprof/"+name] = pprof.Handler(name)
		}
	}
	return routes
}
