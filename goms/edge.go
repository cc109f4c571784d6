package goms

import (
	"net/http"

	"connectrpc.com/connect"
)

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

// inProcessRoute is how Server.Client serves a call of the remote service: through
// the bridge, in-process, without the server's interceptors.
func (r *remote) inProcessRoute(path string) inProcessRoute {
	if h, ok := r.client[path]; ok {
		md := r.methods[path].desc
		return inProcessRoute{h: h, unary: !md.IsStreamingClient() && !md.IsStreamingServer()}
	}
	return inProcessRoute{h: unknownProcedureHandler{listener: "remote " + r.Name}}
}
