package goms

import (
	"context"
	"log/slog"
	"net"
	"net/http"
)

// newHTTPServer returns the net/http server of the listener. It speaks
// HTTP/1.1 and cleartext HTTP/2 on every listener: on TLS listeners goms
// does the TLS (see guardedListener), and a client that chose h2 through
// ALPN sends the HTTP/2 preface as on h2c.
func (l *listener) newHTTPServer(e env) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           httpServerHandler{l},
		Protocols:         &protocols,
		ReadHeaderTimeout: e.cfg.ReadHeaderTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		MaxHeaderBytes:    e.cfg.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: e.cfg.MaxConcurrentStreams,
		},
		BaseContext: func(net.Listener) context.Context { return e.base },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := c.(tlsStater); ok && l.tlsConfig != nil {
				return context.WithValue(ctx, tlsConnKey{}, t)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(e.logger.Handler(), slog.LevelWarn),
	}
}

// httpServerHandler is the handler of the listener's net/http server:
// HTTP/2 requests run on the listener's workers.
type httpServerHandler struct{ l *listener }

func (h httpServerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil && h.l.tlsConfig != nil {
		r = withTLSState(r)
	}
	if h.l.MinBodyRate > 0 && r.Body != nil && r.Body != http.NoBody {
		defer withMinBodyRate(w, r, h.l)()
	}
	if r.ProtoMajor == 2 {
		h.l.workers.serve(h.l, w, r)
		return
	}
	h.l.ServeHTTP(w, r)
}
