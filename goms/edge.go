package goms

import (
	"fmt"
	"net/http"

	"connectrpc.com/connect"
)

// exposeRemotes mounts, on the listeners each remote names in Expose, a
// connect handler per method of the remote service that forwards its calls
// through the remote's client: the listener's protocol filter and
// interceptors apply as to a local service, and every protocol goes out as
// gRPC with the remote's balancing, health checks and deadlines. Called
// with s.mu held.
func (s *Server) exposeRemotes() error {
	for _, r := range s.remotes {
		if len(r.Expose) == 0 {
			continue
		}
		path, edge := "/"+r.Service+"/", r.edgeHandler(s.edgeHandlerOpts)
		for _, name := range r.Expose {
			l := s.listener(name)
			if l == nil {
				return fmt.Errorf("goms: remote %q: expose: unknown listener %q (have %s)", r.Name, name, s.listenerNames())
			}
			if l.routes.has(path) {
				return fmt.Errorf("goms: remote %q: expose: %s is already mounted on listener %q", r.Name, r.Service, name)
			}
			l.routes.add(path, r.Service, edge)
		}
	}
	return nil
}

// edgeHandler serves every method of the remote service with handlers
// built with opts.
func (r *remote) edgeHandler(opts []connect.HandlerOption) http.Handler {
	byPath := make(map[string]http.Handler, len(r.methods))
	for p, m := range r.methods {
		byPath[p] = r.bridgeHandler(m, true, opts)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if h, ok := byPath[req.URL.Path]; ok {
			h.ServeHTTP(w, req)
			return
		}
		http.NotFound(w, req)
	})
}

// route is how Server.Client serves a call of the remote service: through
// the bridge, in-process, without the server's interceptors.
func (r *remote) route(path string) inProcessRoute {
	if h, ok := r.client[path]; ok {
		md := r.methods[path].desc
		return inProcessRoute{h: h, unary: !md.IsStreamingClient() && !md.IsStreamingServer()}
	}
	return inProcessRoute{h: unknownProcedureHandler{listener: "remote " + r.Name}}
}
