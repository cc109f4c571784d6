package goms

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
)

// restHandler serves the REST routes of a listener with Listener.REST: a
// vanguard transcoder over the services of its mux whose methods have
// google.api.http rules.
func restHandler(listener string, m *mux, maxMessageBytes int) (http.Handler, error) {
	var services []*vanguard.Service
	for _, name := range m.names {
		sd, h := m.httpRules(name)
		if h != nil {
			services = append(services, vanguard.NewServiceWithSchema(sd, h))
		}
	}
	if len(services) == 0 {
		return nil, fmt.Errorf("goms: listener %q: rest: no service mounted on it has google.api.http rules", listener)
	}
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(notFoundWriter{w}, r, unknownProcedure(listener, r.URL.Path))
	})
	transcoder, err := vanguard.NewTranscoder(services,
		vanguard.WithUnknownHandler(notFound),
		// vanguard buffers a whole REST body before the handler's own
		// limit applies: bound it the same way.
		vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(uint32(min(maxMessageBytes, math.MaxUint32)))),
	)
	if err != nil {
		return nil, fmt.Errorf("goms: listener %q: rest: %w", listener, err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ew := &restErrorWriter{ResponseWriter: w}
		transcoder.ServeHTTP(ew, r)
		ew.finish()
	}), nil
}

// restErrorWriter turns the plain-text errors vanguard answers before a
// call starts (a method a route does not allow, an unsupported body type)
// into the JSON google.rpc.Status body of its other REST errors.
type restErrorWriter struct {
	http.ResponseWriter
	status int          // a plain-text error's status, held until finish
	text   bytes.Buffer // and its text
}

func (w *restErrorWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *restErrorWriter) Write(p []byte) (int, error) {
	if w.status != 0 {
		return w.text.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

func (w *restErrorWriter) Flush() {
	if w.status == 0 {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *restErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes the held error, if any.
func (w *restErrorWriter) finish() {
	if w.status == 0 {
		return
	}
	body, _ := json.Marshal(struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{int32(restCodeOf(w.status)), strings.TrimSpace(w.text.String()), []any{}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("X-Content-Type-Options")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(body)
}

// restCodeOf is the code a REST error body (google.rpc.Status) gives for
// an HTTP error status: the reverse of google.rpc.Code's mapping to HTTP
// statuses.
func restCodeOf(status int) connect.Code {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return connect.CodeUnimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	}
	if status >= 500 {
		return connect.CodeInternal
	}
	return connect.CodeUnknown
}
