package goms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"connectrpc.com/connect"
)

// Client returns the HTTP client and base URL to call the named service
// (its fully-qualified protobuf name, such as gomsv1connect.GoMsServiceName)
// in the shape generated client constructors take:
//
//	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
//	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, srv.ClientOptions()...)
//
// A service mounted on this server is called in-process: no socket, no
// HTTP/2 framing, but the same handler, interceptors, deadlines and errors
// as a call over the network. A service of Config.Remotes is called over
// kept-alive HTTP/2 connections to its endpoints, dialled when Serve
// starts, balanced by the power of two choices on calls in flight; an
// endpoint that refuses connections is left out for a growing backoff, a
// call that never reached a server is sent once more to another endpoint,
// and one that may have is sent again only if its method is idempotent.
// When no endpoint is reachable the call fails at once with
// CodeUnavailable, naming the service; so does a call to a service that
// is neither mounted nor remote. The client may be created before the
// service is mounted.
func (s *Server) Client(service string) (connect.HTTPClient, string) {
	return inProcessClient{s: s, service: service}, "http://" + service
}

// inProcessClient serves requests with the handler of a service mounted on
// its server.
type inProcessClient struct {
	s       *Server
	service string
}

// inProcessAddr is the peer address handlers see for in-process calls.
const inProcessAddr = "in-process"

func (c inProcessClient) Do(req *http.Request) (*http.Response, error) {
	h := c.s.inProcessHandler(c.service, req.URL.Path)
	if h == nil {
		if r, ok := c.s.remotes[c.service]; ok {
			return remoteClient{r: r}.Do(req)
		}
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s is not mounted in this process", c.service))
	}
	// The handler gets a context of its own: the caller's deadline and
	// cancellation, the server's shutdown, but none of the caller's values
	// (its identity must not leak into the callee).
	ctx, cancelDeadline := c.s.base, context.CancelFunc(func() {})
	if deadline, ok := req.Context().Deadline(); ok {
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(req.Context(), func() {
		// A deadline ends the handler's context by itself, as
		// DeadlineExceeded; only a cancellation is passed on.
		if !errors.Is(req.Context().Err(), context.DeadlineExceeded) {
			cancel(context.Cause(req.Context()))
		}
	})

	body := req.Body
	if body == nil {
		body = http.NoBody
	}
	in := (&http.Request{
		Method:        req.Method,
		URL:           req.URL,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        req.Header,
		Body:          body,
		ContentLength: req.ContentLength,
		Host:          c.service,
		RemoteAddr:    inProcessAddr,
		RequestURI:    req.URL.RequestURI(),
	}).WithContext(ctx)
	pr, pw := io.Pipe()
	w := &inProcessWriter{
		header: make(http.Header, 4),
		body:   pw,
		ready:  make(chan struct{}),
		res: &http.Response{
			Proto:      "HTTP/2.0",
			ProtoMajor: 2,
			Body:       &inProcessBody{PipeReader: pr},
			Request:    req,
			Trailer:    make(http.Header),
		},
	}
	go func() {
		defer func() {
			stop()
			cancelDeadline()
			cancel(context.Canceled)
		}()
		defer func() {
			if v := recover(); v != nil {
				// As net/http does for a connection: log, and end this call.
				c.s.logger.Error("goms: in-process handler panicked", "path", req.URL.Path, "panic", v)
				_ = pw.CloseWithError(fmt.Errorf("goms: handler panicked"))
				w.once.Do(func() { close(w.ready) })
			}
		}()
		h.ServeHTTP(w, in)
		w.finish()
	}()
	select {
	case <-w.ready:
		if w.res.Header == nil {
			return nil, connect.NewError(connect.CodeInternal, errors.New("goms: handler panicked"))
		}
		return w.res, nil
	case <-req.Context().Done():
		// The handler sees the cancellation too and ends on its own.
		_ = pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
}

// inProcessHandler returns the handler that serves path for service, or
// nil when no listener of s mounts it.
func (s *Server) inProcessHandler(service, path string) http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if !slices.Contains(l.routes.names, service) {
			continue
		}
		if h := l.routes.rpc(path); h != nil {
			return h
		}
		return unknownProcedureHandler{listener: l.Name}
	}
	return nil
}

type unknownProcedureHandler struct{ listener string }

func (u unknownProcedureHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, unknownProcedure(u.listener, r.URL.Path))
}

// inProcessWriter is the ResponseWriter of an in-process call: headers
// are handed over at the first write or flush, the body streams through a
// pipe, and trailers are set on the response before the body ends.
type inProcessWriter struct {
	header http.Header
	body   *io.PipeWriter
	res    *http.Response
	ready  chan struct{}
	once   sync.Once
	wrote  bool
}

func (w *inProcessWriter) Header() http.Header { return w.header }

func (w *inProcessWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.res.StatusCode = code
	w.res.Status = fmt.Sprintf("%d %s", code, http.StatusText(code))
	h := make(http.Header, len(w.header))
	for k, v := range w.header {
		if _, trailer := strings.CutPrefix(k, http.TrailerPrefix); k == "Trailer" || trailer {
			continue
		}
		h[k] = slices.Clone(v)
	}
	w.res.Header = h
	w.res.ContentLength = -1
	w.once.Do(func() { close(w.ready) })
}

func (w *inProcessWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(p)
}

// Flush hands the headers over; the body needs no flushing.
func (w *inProcessWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
}

// finish sets the trailers and ends the body.
func (w *inProcessWriter) finish() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	for k, v := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			w.res.Trailer[http.CanonicalHeaderKey(name)] = v
		} else if announcedTrailer(w.header["Trailer"], k) {
			w.res.Trailer[k] = v
		}
	}
	_ = w.body.Close()
}

// inProcessBody ends the handler's writes when the caller stops reading.
type inProcessBody struct{ *io.PipeReader }

func (b *inProcessBody) Close() error {
	return b.CloseWithError(errors.New("goms: in-process response body closed"))
}
