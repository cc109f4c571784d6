package goms

import (
	"fmt"
	"net/http"

	"connectrpc.com/grpchealth"
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

// addBuiltins mounts health checking and the probes on every listener,
// the admin routes on the admin listener, reflection where
// Config.Reflection allows it, and builds the REST routes and OpenAPI
// documents of the listeners that serve them. Called with s.mu held, once
// all user mounts are known.
func (s *Server) addBuiltins() error {
	healthPath, healthHandler := grpchealth.NewHandler(s.health, s.handlerOpts...)
	probes := map[string]http.Handler{
		livenessPath:  http.HandlerFunc(liveness),
		readinessPath: http.HandlerFunc(s.readiness),
		healthPath:    healthHandler,
	}
	for _, l := range s.listeners {
		for path, h := range probes {
			if err := s.mountLocked([]string{l.Name}, path, h); err != nil {
				return err
			}
		}
		if !l.admin {
			continue
		}
		for path, h := range s.adminRoutes() {
			// Admin routes are plain paths, "/debug/pprof/" included.
			if l.routes.has(path) {
				return fmt.Errorf("goms: admin route %q: already mounted", path)
			}
			l.routes.add(path, "", h)
		}
	}
	if err := s.addReflection(); err != nil {
		return err
	}
	if err := s.addREST(); err != nil {
		return err
	}
	return s.addOpenAPI()
}

func liveness(w http.ResponseWriter, r *http.Request) {
	probe(w, r, http.StatusOK, "ok\n")
}

func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		probe(w, r, http.StatusServiceUnavailable, "not ready\n")
		return
	}
	res, err := s.health.Check(r.Context(), &grpchealth.CheckRequest{})
	if err != nil || res.Status != grpchealth.StatusServing {
		probe(w, r, http.StatusServiceUnavailable, "not ready\n")
		return
	}
	probe(w, r, http.StatusOK, "ready\n")
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
