package goms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"
)

// inProcessClient serves requests with the handler of a service mounted on
// its server.
type inProcessClient struct {
	env     env
	service string
	// route finds the handler of a procedure of the service.
	route func(service, path string) (inProcessRoute, bool)
}

// inProcessAddr is the peer address handlers see for in-process calls.
const inProcessAddr = "in-process"

func (c inProcessClient) Do(req *http.Request) (*http.Response, error) {
	route, ok := c.route(c.service, req.URL.Path)
	if !ok {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s is not mounted in this process", c.service))
	}
	return c.serve(route, req)
}

// serve serves req with the handler of route, in this process.
func (c inProcessClient) serve(route inProcessRoute, req *http.Request) (*http.Response, error) {
	if route.unary && req.GetBody != nil {
		// A unary request's body is whole: serve it on this goroutine.
		return c.serveUnary(route.h, req)
	}
	// The handler gets a context of its own: the caller's deadline and
	// cancellation, the server's shutdown, but none of the caller's values
	// (its identity must not leak into the callee).
	ctx, cancel, stop := c.env.cutAtShutdown(valuelessContext{req.Context()})
	in := c.request(req, ctx)
	pr, pw := io.Pipe()
	w := &inProcessWriter{
		header: make(http.Header, 4),
		body:   pw,
		ready:  make(chan struct{}),
		res:    newInProcessResponse(req),
	}
	w.res.Body = &inProcessBody{PipeReader: pr}
	go func() {
		defer func() {
			stop()
			cancel(nil)
		}()
		defer func() {
			if v := recover(); v != nil {
				// As net/http does for a connection: log, and end this call.
				c.env.logger.Error("goms: in-process handler panicked", "path", req.URL.Path, "panic", v)
				_ = pw.CloseWithError(fmt.Errorf("goms: handler panicked"))
				w.once.Do(func() { close(w.ready) })
			}
		}()
		route.h.ServeHTTP(w, in)
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

// serveUnary serves a unary call on the caller's goroutine: no goroutine,
// no pipe; the response is whole when the handler returns. The handler's
// context has the caller's deadline and cancellation, and the server's
// shutdown, but none of the caller's values.
func (c inProcessClient) serveUnary(h http.Handler, req *http.Request) (res *http.Response, err error) {
	if c.env.base.Err() != nil {
		// After shutdown, as the drain interceptor would say.
		return nil, connect.NewError(connect.CodeUnavailable, context.Cause(c.env.base))
	}
	var buf *bytes.Buffer
	defer func() {
		if v := recover(); v != nil {
			c.env.logger.Error("goms: in-process handler panicked", "path", req.URL.Path, "panic", v)
			putInProcessBuffer(buf)
			res, err = nil, connect.NewError(connect.CodeInternal, errors.New("goms: handler panicked"))
		}
	}()
	ctx, cancel, stop := c.env.cutAtShutdown(valuelessContext{req.Context()})
	defer cancel(nil)
	defer stop()
	return bufferedResponse(req, func(w http.ResponseWriter, b *bytes.Buffer) {
		buf = b
		h.ServeHTTP(w, c.request(req, ctx))
	}), nil
}

// bufferedResponse returns the response serve writes, kept whole in a
// pooled buffer that closing the body gives back.
func bufferedResponse(req *http.Request, serve func(http.ResponseWriter, *bytes.Buffer)) *http.Response {
	buf := getInProcessBuffer()
	w := &inProcessWriter{header: make(http.Header, 4), res: newInProcessResponse(req), buf: buf}
	serve(w, buf)
	w.finish()
	w.res.ContentLength = int64(buf.Len())
	w.res.Body = &inProcessBufferBody{buf: buf}
	return w.res
}

// request is the server side of an in-process request: the caller's
// method, URL and body, its headers but those accepting compressed
// responses (pointless without a network), and ctx.
func (c inProcessClient) request(req *http.Request, ctx context.Context) *http.Request {
	body := req.Body
	if body == nil {
		body = http.NoBody
	}
	header := make(http.Header, len(req.Header))
	for k, v := range req.Header {
		switch k {
		case "Accept-Encoding", "Grpc-Accept-Encoding", "Connect-Accept-Encoding":
		default:
			header[k] = v
		}
	}
	return (&http.Request{
		Method:        req.Method,
		URL:           req.URL,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		Body:          body,
		ContentLength: req.ContentLength,
		Host:          c.service,
		RemoteAddr:    inProcessAddr,
		RequestURI:    req.URL.Path,
	}).WithContext(ctx)
}

func newInProcessResponse(req *http.Request) *http.Response {
	return &http.Response{
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Request:       req,
		Trailer:       make(http.Header),
		ContentLength: -1,
	}
}

// valuelessContext is a context with the deadline and cancellation of
// another and no values. Its AfterFunc lets contexts derived from it (a
// handler's timeout) hang on the other's cancellation without a goroutine.
type valuelessContext struct{ context.Context }

func (valuelessContext) Value(any) any { return nil }

func (c valuelessContext) AfterFunc(f func()) (stop func() bool) {
	return context.AfterFunc(c.Context, f)
}

// inProcessRoute is how in-process calls of one procedure are served.
type inProcessRoute struct {
	h http.Handler
	// unary is true for methods that are neither client nor server
	// streaming.
	unary bool
}

// servicePath tells whether path is "/" + service + "/" + something.
func servicePath(path, service string) bool {
	return len(path) > len(service)+2 && path[0] == '/' && path[1:len(service)+1] == service && path[len(service)+1] == '/'
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
	res    *http.Response
	wrote  bool
	// Either the body streams through a pipe, the headers handed over on
	// ready, or it is kept whole in buf (unary calls).
	body  *io.PipeWriter
	ready chan struct{}
	once  sync.Once
	buf   *bytes.Buffer
}

func (w *inProcessWriter) Header() http.Header { return w.header }

func (w *inProcessWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.res.StatusCode = code
	w.res.Status = statusText(code)
	h := make(http.Header, len(w.header))
	for k, v := range w.header {
		if _, trailer := strings.CutPrefix(k, http.TrailerPrefix); k == "Trailer" || trailer {
			continue
		}
		h[k] = slices.Clone(v)
	}
	w.res.Header = h
	if w.ready != nil {
		w.once.Do(func() { close(w.ready) })
	}
}

// statusText is the Status of a response with the given code.
func statusText(code int) string {
	if code == http.StatusOK {
		return "200 OK"
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

func (w *inProcessWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.buf != nil {
		return w.buf.Write(p)
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
	if w.body != nil {
		_ = w.body.Close()
	}
}

// inProcessBody ends the handler's writes when the caller stops reading.
type inProcessBody struct{ *io.PipeReader }

func (b *inProcessBody) Close() error {
	return b.CloseWithError(errors.New("goms: in-process response body closed"))
}

// inProcessBuffers holds the response buffers of unary in-process calls.
var inProcessBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer is the largest buffer put back in the pool.
const maxPooledBuffer = 64 << 10

func getInProcessBuffer() *bytes.Buffer { return inProcessBuffers.Get().(*bytes.Buffer) }

func putInProcessBuffer(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBuffer {
		b.Reset()
		inProcessBuffers.Put(b)
	}
}

// inProcessBufferBody is the body of a unary in-process response. Close
// gives its buffer back.
type inProcessBufferBody struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (b *inProcessBufferBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return 0, errors.New("goms: read on a closed in-process response body")
	}
	return b.buf.Read(p)
}

func (b *inProcessBufferBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf != nil {
		putInProcessBuffer(b.buf)
		b.buf = nil
	}
	return nil
}
