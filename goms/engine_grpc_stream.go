package goms

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The stream bridge of the grpc engine: each grpc-go server stream is
// served by the listener's handler, through an http.Request and an
// http.ResponseWriter made from the stream, so that connect's handlers and
// goms's interceptors run as they do on net/http.

// handleStream runs one gRPC call through the listener's handler.
func (e *grpcEngine) handleStream(_ any, stream grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(stream)
	if !ok {
		return status.Error(codes.Internal, "goms: stream without method")
	}
	ctx := stream.Context()
	if c, ok := ctx.Value(cutContextKey{}).(*cutContext); ok {
		// The stream's context can be ended already: the server's
		// shutdown ends it too.
		defer context.AfterFunc(e.env.base, func() { c.cancel(context.Cause(e.env.base)) })()
	} else {
		var cancel context.CancelCauseFunc
		var stop func() bool
		ctx, cancel, stop = e.env.cutAtShutdown(ctx)
		defer cancel(nil)
		defer stop()
	}

	md, _ := metadata.FromIncomingContext(ctx) // a copy: ours to change
	header := make(http.Header, len(md)+1)
	host := ""
	for k, v := range md {
		switch k {
		case ":authority":
			if len(v) > 0 {
				host = v[0]
			}
			continue
		case "grpc-accept-encoding":
			// grpc-go compresses responses itself.
			continue
		}
		if strings.HasSuffix(k, "-bin") {
			for i, b := range v {
				v[i] = base64.RawStdEncoding.EncodeToString([]byte(b))
			}
		}
		header[canonicalKey(k)] = v
	}
	if _, ok := header["Content-Type"]; !ok {
		header["Content-Type"] = []string{"application/grpc"}
	}
	remote := ""
	var tlsState *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			remote = p.Addr.String()
		}
		if info, ok := p.AuthInfo.(bridgeInfo); ok {
			tlsState = info.tls
		}
	}
	call := &bridgedStream{
		body: streamBody{stream: stream},
		w:    streamWriter{stream: stream, header: make(http.Header, 4)},
		url:  url.URL{Path: method},
	}
	// WithContext copies the request: the first one is a pooled template.
	tmpl := requestTemplates.Get().(*http.Request)
	*tmpl = http.Request{
		Method:        http.MethodPost,
		URL:           &call.url,
		RequestURI:    method,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		Body:          &call.body,
		ContentLength: -1,
		Host:          host,
		RemoteAddr:    remote,
		TLS:           tlsState,
	}
	req := tmpl.WithContext(ctx)
	*tmpl = http.Request{}
	requestTemplates.Put(tmpl)
	e.l.ServeHTTP(&call.w, req)
	call.body.free()
	return call.w.finish()
}

// bridgedStream is what one bridged call needs, allocated at once.
type bridgedStream struct {
	body streamBody
	w    streamWriter
	url  url.URL
}

var requestTemplates = sync.Pool{New: func() any { return new(http.Request) }}

// canonicalKey is http.CanonicalHeaderKey, without allocating for the
// keys gRPC calls carry most.
func canonicalKey(k string) string {
	switch k {
	case "content-type":
		return "Content-Type"
	case "user-agent":
		return "User-Agent"
	case "x-request-id":
		return "X-Request-Id"
	case "traceparent":
		return "Traceparent"
	case "authorization":
		return "Authorization"
	}
	return http.CanonicalHeaderKey(k)
}

// lowerKey is strings.ToLower for header keys, without allocating for the
// keys connect handlers write most.
func lowerKey(k string) string {
	switch k {
	case "Grpc-Status":
		return "grpc-status"
	case "Grpc-Message":
		return "grpc-message"
	case "Grpc-Status-Details-Bin":
		return "grpc-status-details-bin"
	case "X-Request-Id":
		return "x-request-id"
	}
	return strings.ToLower(k)
}

// rawCodec passes message bytes through: the connect handler does the
// (un)marshalling.
type rawCodec struct{}

// rawMessage holds one received message until the handler has read it.
type rawMessage struct{ data mem.BufferSlice }

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("goms: raw codec cannot marshal %T", v)
	}
	buf := mem.DefaultBufferPool().Get(len(*b))
	copy(*buf, *b)
	return mem.BufferSlice{mem.NewBuffer(buf, mem.DefaultBufferPool())}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("goms: raw codec cannot unmarshal into %T", v)
	}
	data.Ref()
	m.data = data
	return nil
}

// streamBody is the request body of a bridged call: the received messages,
// each behind a 5-byte gRPC envelope prefix (uncompressed: grpc-go has
// already decompressed it).
type streamBody struct {
	stream  grpc.ServerStream
	msg     rawMessage
	r       mem.Reader // the message being read
	reading bool
	prefix  [5]byte
	off     int // bytes of prefix already read
	err     error
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if !b.reading {
		if err := b.stream.RecvMsg(&b.msg); err != nil {
			b.err = recvError(err)
			return 0, b.err
		}
		b.r.Reset(b.msg.data) // takes its own references
		b.msg.data.Free()
		b.msg.data = nil
		b.prefix[0] = 0
		binary.BigEndian.PutUint32(b.prefix[1:], uint32(b.r.Remaining()))
		b.off = 0
		b.reading = true
	}
	var n int
	if b.off < len(b.prefix) {
		n = copy(p, b.prefix[b.off:])
		b.off += n
		p = p[n:]
	}
	if len(p) > 0 {
		m, _ := b.r.Read(p)
		n += m
	}
	if b.off == len(b.prefix) && b.r.Remaining() == 0 {
		b.reading = false
	}
	return n, nil
}

func (b *streamBody) Close() error { return nil }

func (b *streamBody) free() { _ = b.r.Close() }

// recvError turns a grpc-go receive error into what the connect handler
// expects: io.EOF at the end, and a *connect.Error with the same code
// otherwise (a message over the limit stays CodeResourceExhausted).
func recvError(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if st, ok := status.FromError(err); ok {
		return connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	}
	return err
}

// streamWriter is the http.ResponseWriter of a bridged call. It turns the
// enveloped messages the connect handler writes into sent messages, and its
// trailers into the call's status and trailer metadata.
type streamWriter struct {
	stream      grpc.ServerStream
	header      http.Header
	wroteHeader bool
	sentHeader  bool
	status      int
	pending     []byte // bytes of an envelope not complete yet
	prefix      [5]byte
	msg         []byte
	err         error
}

func (w *streamWriter) Header() http.Header { return w.header }

func (w *streamWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.status != http.StatusOK {
		return len(p), nil // a plain HTTP answer: only its status matters
	}
	if err := w.sendHeader(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		// Fast path: a whole envelope in one write, as connect writes them.
		if len(w.pending) == 0 && len(p) >= 5 {
			if size := int(binary.BigEndian.Uint32(p[1:5])); len(p) >= 5+size {
				if err := w.send(p[0], p[5:5+size]); err != nil {
					return 0, err
				}
				p = p[5+size:]
				continue
			}
		}
		if len(w.pending) < 5 {
			take := min(5-len(w.pending), len(p))
			if w.pending == nil {
				w.pending = w.prefix[:0]
			}
			w.pending = append(w.pending, p[:take]...)
			p = p[take:]
			if len(w.pending) < 5 {
				break
			}
		}
		size := int(binary.BigEndian.Uint32(w.pending[1:5]))
		if len(w.pending) == 5 && len(p) >= size {
			// connect writes the prefix and then the message: the message
			// is sent from its own write, not copied.
			flags := w.pending[0]
			w.pending = w.pending[:0]
			if err := w.send(flags, p[:size]); err != nil {
				return 0, err
			}
			p = p[size:]
			continue
		}
		need := 5 + size
		take := min(need-len(w.pending), len(p))
		w.pending = append(w.pending, p[:take]...)
		p = p[take:]
		if len(w.pending) == need {
			if err := w.send(w.pending[0], w.pending[5:]); err != nil {
				return 0, err
			}
			w.pending = w.pending[:0]
		}
	}
	return n, nil
}

// send sends one message; connect never compresses here because the
// request's compression headers were withheld from it.
func (w *streamWriter) send(flags byte, msg []byte) error {
	if flags != 0 {
		w.err = status.Error(codes.Internal, "goms: unexpected compressed or end-of-stream envelope from handler")
		return w.err
	}
	w.msg = msg
	if err := w.stream.SendMsg(&w.msg); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Flush sends the response headers if they are pending, as net/http does.
func (w *streamWriter) Flush() {
	if w.wroteHeader && w.status == http.StatusOK {
		_ = w.sendHeader()
	}
}

func (w *streamWriter) sendHeader() error {
	if w.sentHeader {
		return nil
	}
	w.sentHeader = true
	md := toMetadata(w.header, false, nil)
	if len(md) == 0 {
		return nil
	}
	if err := w.stream.SendHeader(md); err != nil {
		w.err = err
		return err
	}
	return nil
}

// finish ends the call: headers not sent yet go with the trailers, and the
// grpc-status trailers the handler wrote become the returned status.
func (w *streamWriter) finish() error {
	if w.err != nil {
		return w.err
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.status != http.StatusOK {
		return status.Error(httpStatusToCode(w.status), fmt.Sprintf("goms: HTTP status %d from a plain HTTP handler", w.status))
	}
	if !w.sentHeader {
		w.sentHeader = true
		if md := toMetadata(w.header, false, nil); len(md) > 0 {
			if err := w.stream.SetHeader(md); err != nil {
				return err
			}
		}
	}
	var st statusTrailers
	if trailer := toMetadata(w.header, true, &st); len(trailer) > 0 {
		w.stream.SetTrailer(trailer)
	}
	code, message, details := st.code, st.message, st.details
	if len(details) > 0 {
		var st spb.Status
		if err := proto.Unmarshal([]byte(details[0]), &st); err == nil {
			if st.GetCode() == 0 {
				return nil
			}
			return status.FromProto(&st).Err()
		}
	}
	if len(code) == 0 {
		return status.Error(codes.Internal, "goms: handler ended without a grpc-status")
	}
	if code[0] == "0" {
		return nil
	}
	c, err := strconv.ParseUint(code[0], 10, 32)
	if err != nil {
		return status.Errorf(codes.Internal, "goms: handler wrote grpc-status %q", code[0])
	}
	if c == 0 {
		return nil
	}
	msg := ""
	if len(message) > 0 {
		msg, err = url.PathUnescape(message[0])
		if err != nil {
			msg = message[0]
		}
	}
	return status.Error(codes.Code(c), msg)
}

// statusTrailers are the trailers that make a call's gRPC status, which
// grpc-go writes itself from the returned error.
type statusTrailers struct {
	code, message, details []string
}

// toMetadata converts response headers (trailers=false) or trailers
// (trailers=true: keys with http.TrailerPrefix and keys announced in a
// Trailer header) into gRPC metadata, decoding -bin values; nil when there
// are none. With st, the status trailers go to st instead: a call with no
// other trailer then makes no metadata.
func toMetadata(h http.Header, trailers bool, st *statusTrailers) metadata.MD {
	var md metadata.MD
	announced := h["Trailer"]
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if !trailers {
				continue
			}
			k = name
		} else {
			isTrailer := len(announced) > 0 && announcedTrailer(announced, k)
			if trailers != isTrailer {
				continue
			}
			switch k {
			case "Content-Type", "Grpc-Accept-Encoding", "Grpc-Encoding", "Trailer", "Content-Length", "Date", "Te":
				continue
			}
		}
		k = lowerKey(k)
		if st != nil {
			switch k {
			case "grpc-status":
				st.code = joinValues(st.code, v)
				continue
			case "grpc-message":
				st.message = joinValues(st.message, v)
				continue
			}
		}
		if strings.HasSuffix(k, "-bin") {
			decoded := make([]string, 0, len(v))
			for _, s := range v {
				b, err := connect.DecodeBinaryHeader(s)
				if err != nil {
					continue
				}
				decoded = append(decoded, string(b))
			}
			v = decoded
			if st != nil && k == "grpc-status-details-bin" {
				st.details = joinValues(st.details, v)
				continue
			}
		}
		if md == nil {
			md = make(metadata.MD, len(h))
		}
		if prev, ok := md[k]; ok {
			md[k] = append(prev, v...)
		} else {
			md[k] = v
		}
	}
	return md
}

// joinValues returns the values of a key seen twice (as a header and as a
// trailer) together, and those of a key seen once as they are.
func joinValues(prev, v []string) []string {
	if prev == nil {
		return v
	}
	return append(slices.Clip(prev), v...)
}

func announcedTrailer(announced []string, key string) bool {
	for _, list := range announced {
		for name := range strings.SplitSeq(list, ",") {
			if strings.EqualFold(strings.TrimSpace(name), key) {
				return true
			}
		}
	}
	return false
}

// httpStatusToCode maps the status of a plain HTTP answer as gRPC clients
// do (gRPC's HTTP-to-status mapping).
func httpStatusToCode(s int) codes.Code {
	switch s {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	default:
		return codes.Unknown
	}
}
