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
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// addREST builds the REST routes of every listener whose Listener.REST is
// set: a vanguard transcoder over the services mounted on it whose methods
// have google.api.http rules. Called with s.mu held, once all mounts are
// known.
func (s *Server) addREST() error {
	for _, l := range s.listeners {
		if !l.REST {
			continue
		}
		var services []*vanguard.Service
		for _, name := range l.routes.names {
			sd, h := l.routes.httpRules(name)
			if h != nil {
				services = append(services, vanguard.NewServiceWithSchema(sd, h))
			}
		}
		if len(services) == 0 {
			return fmt.Errorf("goms: listener %q: rest: no service mounted on it has google.api.http rules", l.Name)
		}
		notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(notFoundWriter{w}, r, unknownProcedure(l.Name, r.URL.Path))
		})
		transcoder, err := vanguard.NewTranscoder(services,
			vanguard.WithUnknownHandler(notFound),
			// vanguard buffers a whole REST body before the handler's own
			// limit applies: bound it the same way.
			vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(uint32(min(s.cfg.MaxMessageBytes, math.MaxUint32)))),
		)
		if err != nil {
			return fmt.Errorf("goms: listener %q: rest: %w", l.Name, err)
		}
		l.rest = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ew := &restErrorWriter{ResponseWriter: w}
			transcoder.ServeHTTP(ew, r)
			ew.finish()
		})
	}
	return nil
}

// httpRules returns the descriptor and handler of a mounted service when
// at least one of its methods has a google.api.http rule, and nil
// otherwise.
func (r *routes) httpRules(service string) (protoreflect.ServiceDescriptor, http.Handler) {
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return nil, nil
	}
	methods := sd.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		if proto.HasExtension(m.Options(), annotations.E_Http) {
			return sd, r.procedures["/"+service+"/"+string(m.Name())]
		}
	}
	return nil, nil
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
	}{int32(httpStatusCode(w.status)), strings.TrimSpace(w.text.String()), []any{}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("X-Content-Type-Options")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(body)
}

// httpStatusCode is the code of an HTTP error status, the reverse of the
// mapping of google.rpc.Code to HTTP statuses.
func httpStatusCode(status int) connect.Code {
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
