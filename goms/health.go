package goms

import (
	"net/http"
	"slices"
	"sync/atomic"

	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
)

// Paths of the plain HTTP probes every listener serves, for load balancers
// and orchestrators that do not speak gRPC.
const (
	// livenessPath answers 200 while the process serves at all.
	livenessPath = "/healthz"
	// readinessPath answers 200 while the server takes traffic, and 503
	// before Serve, once shutdown begins, or while SetHealth("", ...)
	// says NOT_SERVING.
	readinessPath = "/readyz"
)

// builtinServices are the RPC services goms mounts itself: health checking
// and reflection. Their calls are never shed, stay out of access logs by
// default, and are left out of the OpenAPI document.
var builtinServices = []string{
	grpchealth.HealthV1ServiceName,
	grpcreflect.ReflectV1ServiceName,
	grpcreflect.ReflectV1AlphaServiceName,
}

// builtinService reports whether goms mounts the service itself.
func builtinService(name string) bool {
	return slices.Contains(builtinServices, name)
}

// probeRoutes returns the handlers of the probes: readiness follows ready
// (set while the server serves) and the server's status in checker.
func probeRoutes(ready *atomic.Bool, checker *grpchealth.StaticChecker) map[string]http.Handler {
	return map[string]http.Handler{
		livenessPath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			probe(w, r, http.StatusOK, "ok\n")
		}),
		readinessPath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !ready.Load() {
				probe(w, r, http.StatusServiceUnavailable, "not ready\n")
				return
			}
			res, err := checker.Check(r.Context(), &grpchealth.CheckRequest{})
			if err != nil || res.Status != grpchealth.StatusServing {
				probe(w, r, http.StatusServiceUnavailable, "not ready\n")
				return
			}
			probe(w, r, http.StatusOK, "ready\n")
		}),
	}
}

func probe(w http.ResponseWriter, r *http.Request, status int, body string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(body))
	}
}
