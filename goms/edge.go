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
