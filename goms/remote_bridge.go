package goms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The bridge turns a connect handler's call into a call on the remote's
// grpc-go ClientConn. Each method of a remote service gets a connect
// handler whose messages stay bytes (rawFrame): connect parses the caller's
// protocol (gRPC, gRPC-Web, Connect, JSON or binary, compressed or not),
// and grpc-go carries the bytes to an endpoint as gRPC with the same codec
// (application/grpc+proto or +json). Server.Client serves its calls to a
// remote with these handlers in-process; an edge mounts them on its
// listeners.

// rawFrame is one message, kept as the bytes of the codec the caller
// chose.
type rawFrame struct {
	data []byte
	json bool
}

// rawConnectCodec is the connect side of the bridge: it hands message
// bytes over without parsing them. One instance stands for "proto", one for
// "json".
type rawConnectCodec struct{ json bool }

func (c rawConnectCodec) Name() string {
	if c.json {
		return "json"
	}
	return "proto"
}

func (c rawConnectCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend appends a message's bytes; connect also marshals messages
// of its own with the codec named "proto" (a gRPC error's status), which
// are proto messages.
func (c rawConnectCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	switch m := v.(type) {
	case *rawFrame:
		return append(dst, m.data...), nil
	case proto.Message:
		if c.json {
			return protojson.MarshalOptions{}.MarshalAppend(dst, m)
		}
		return proto.MarshalOptions{}.MarshalAppend(dst, m)
	}
	return nil, fmt.Errorf("goms: raw codec cannot marshal %T", v)
}

func (c rawConnectCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		if m, ok := v.(proto.Message); ok {
			if c.json {
				return protojson.Unmarshal(data, m)
			}
			return proto.Unmarshal(data, m)
		}
		return fmt.Errorf("goms: raw codec cannot unmarshal into %T", v)
	}
	// connect reuses its buffer once Unmarshal returns.
	f.data, f.json = append(f.data[:0], data...), c.json
	return nil
}

// rawGRPCCodec is the grpc-go side of the bridge; its name is the call's
// content-subtype.
type rawGRPCCodec struct{ name string }

var (
	grpcProtoCodec = rawGRPCCodec{name: "proto"}
	grpcJSONCodec  = rawGRPCCodec{name: "json"}
)

func (c rawGRPCCodec) Name() string { return c.name }

func (c rawGRPCCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*rawFrame)
	if !ok {
		return nil, fmt.Errorf("goms: raw codec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(f.data)}, nil
}

func (c rawGRPCCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return fmt.Errorf("goms: raw codec cannot unmarshal into %T", v)
	}
	f.data = data.Materialize()
	return nil
}

// bridgeHandler returns the connect handler of one method of r. opts are
// the handler options (the listener's interceptors on an edge, none for
// Server.Client). An edge forwards calls without a deadline as they are:
// only the maximum applies to them.
func (r *remote) bridgeHandler(m *remoteMethod, edge bool, opts []connect.HandlerOption) http.Handler {
	opts = append([]connect.HandlerOption{
		connect.WithCodec(rawConnectCodec{}),
		connect.WithCodec(rawConnectCodec{json: true}),
		connect.WithSchema(m.desc),
		connect.WithIdempotency(m.idempotency()),
	}, opts...)
	b := bridgeCall{r: r, m: m, edge: edge}
	switch {
	case m.desc.IsStreamingClient() && m.desc.IsStreamingServer():
		return connect.NewBidiStreamHandler(m.procedure, b.bidi, opts...)
	case m.desc.IsStreamingClient():
		return connect.NewClientStreamHandler(m.procedure, b.clientStream, opts...)
	case m.desc.IsStreamingServer():
		return connect.NewServerStreamHandler(m.procedure, b.serverStream, opts...)
	default:
		return connect.NewUnaryHandler(m.procedure, b.unary, opts...)
	}
}

func (m *remoteMethod) idempotency() connect.IdempotencyLevel {
	if o, ok := m.desc.Options().(*descriptorpb.MethodOptions); ok {
		return connect.IdempotencyLevel(o.GetIdempotencyLevel())
	}
	return connect.IdempotencyUnknown
}

// bridgeCall runs the calls of one method.
type bridgeCall struct {
	r    *remote
	m    *remoteMethod
	edge bool
}

// start prepares a call: the throttle's verdict, the deadline, the
// outgoing metadata. end must be called with the call's error.
func (b bridgeCall) start(ctx context.Context, header http.Header) (context.Context, *grpc.ClientConn, context.CancelFunc, error) {
	cc, err := b.r.conn()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := b.r.throttle.admit(); err != nil {
		b.r.stats.throttled.Add(1)
		return nil, nil, nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s (remote %q): %w", b.r.Service, b.r.Name, err))
	}
	b.r.awaitReady(ctx, cc)
	b.r.stats.calls.Add(1)
	b.r.budget.earn()
	ctx, cancel := b.m.deadline(ctx, !b.edge)
	return metadata.NewOutgoingContext(ctx, outgoingMetadata(header)), cc, cancel, nil
}

func (b bridgeCall) end(err error) error {
	b.r.throttle.record(err)
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Unavailable {
		b.r.resolveNow()
	}
	return b.r.connectError(err)
}

func (b bridgeCall) callOptions(json bool, header, trailer *metadata.MD) []grpc.CallOption {
	codec := grpcProtoCodec
	if json {
		codec = grpcJSONCodec
	}
	return []grpc.CallOption{grpc.ForceCodecV2(codec), grpc.Header(header), grpc.Trailer(trailer)}
}

func (b bridgeCall) unary(ctx context.Context, req *connect.Request[rawFrame]) (*connect.Response[rawFrame], error) {
	ctx, cc, cancel, err := b.start(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	defer cancel()
	res, header, trailer, err := b.invoke(ctx, cc, req.Msg)
	if err != nil {
		return nil, withMetadata(b.end(err), header, trailer)
	}
	_ = b.end(nil)
	out := connect.NewResponse(res)
	copyIncoming(out.Header(), header)
	copyIncoming(out.Trailer(), trailer)
	return out, nil
}

// invoke sends a unary call, hedged when its method is.
func (b bridgeCall) invoke(ctx context.Context, cc *grpc.ClientConn, msg *rawFrame) (*rawFrame, metadata.MD, metadata.MD, error) {
	if b.m.hedge {
		return b.hedge(ctx, cc, msg)
	}
	res := new(rawFrame)
	var header, trailer metadata.MD
	start := time.Now()
	err := cc.Invoke(ctx, b.m.procedure, msg, res, b.callOptions(msg.json, &header, &trailer)...)
	if err == nil {
		b.m.latency.add(time.Since(start))
	}
	return res, header, trailer, err
}

// hedge sends a side-effect-free call, and a second attempt to another
// endpoint when the first has not answered after the method's hedge delay
// and the retry budget allows it. The first answer that is not a failure
// of its endpoint wins; the other attempt is cancelled. The first attempt
// runs on the caller's goroutine: most calls answer before the delay and
// never start another.
func (b bridgeCall) hedge(ctx context.Context, cc *grpc.ClientConn, msg *rawFrame) (*rawFrame, metadata.MD, metadata.MD, error) {
	type result struct {
		res             *rawFrame
		header, trailer metadata.MD
		err             error
	}
	invoke := func(ctx context.Context, r *result) {
		r.res = new(rawFrame)
		start := time.Now()
		r.err = cc.Invoke(ctx, b.m.procedure, msg, r.res, b.callOptions(msg.json, &r.header, &r.trailer)...)
		if r.err == nil {
			b.m.latency.add(time.Since(start))
		}
	}
	firstCtx, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	hint := &pickHint{}
	var second struct {
		sync.Mutex
		started bool
		done    chan result
		cancel  context.CancelFunc
	}
	timer := time.AfterFunc(b.m.hedgeDelay(), func() {
		second.Lock()
		defer second.Unlock()
		if firstCtx.Err() != nil || !b.r.budget.take() {
			return
		}
		b.r.stats.hedges.Add(1)
		hctx, cancel := context.WithCancel(ctx)
		second.started, second.done, second.cancel = true, make(chan result, 1), cancel
		go func() {
			var r result
			invoke(withPickHint(hctx, &pickHint{avoid: hint.picked()}), &r)
			if r.err == nil || !endpointFailure(status.Code(r.err)) {
				cancelFirst() // it won
			}
			second.done <- r
		}()
	})
	var first result
	invoke(withPickHint(firstCtx, hint), &first)
	timer.Stop()
	second.Lock()
	started, done, cancelSecond := second.started, second.done, second.cancel
	cancelFirst() // no hedge starts from now on
	second.Unlock()
	if !started {
		return first.res, first.header, first.trailer, first.err
	}
	defer cancelSecond()
	if first.err == nil || !endpointFailure(status.Code(first.err)) && status.Code(first.err) != codes.Canceled {
		return first.res, first.header, first.trailer, first.err
	}
	// The first failed on its endpoint or was cancelled because the hedge
	// won: the hedge's answer counts.
	r := <-done
	if r.err != nil && first.err != nil && status.Code(first.err) != codes.Canceled && ctx.Err() == nil && endpointFailure(status.Code(r.err)) {
		return first.res, first.header, first.trailer, first.err
	}
	return r.res, r.header, r.trailer, r.err
}

func (b bridgeCall) clientStream(ctx context.Context, stream *connect.ClientStream[rawFrame]) (*connect.Response[rawFrame], error) {
	ctx, cc, cancelDeadline, err := b.start(ctx, stream.RequestHeader())
	if err != nil {
		return nil, err
	}
	defer cancelDeadline()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	json := strings.Contains(stream.RequestHeader().Get("Content-Type"), "json")
	var header, trailer metadata.MD
	gs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, b.m.procedure, b.callOptions(json, &header, &trailer)...)
	if err != nil {
		return nil, b.end(err)
	}
	for stream.Receive() {
		if err := gs.SendMsg(stream.Msg()); err != nil {
			break // RecvMsg tells why
		}
	}
	if err := stream.Err(); err != nil {
		cancel()
		return nil, err
	}
	_ = gs.CloseSend()
	res := new(rawFrame)
	if err := gs.RecvMsg(res); err != nil {
		return nil, withMetadata(b.end(err), header, trailer)
	}
	_ = b.end(nil)
	out := connect.NewResponse(res)
	copyIncoming(out.Header(), header)
	copyIncoming(out.Trailer(), gs.Trailer())
	return out, nil
}

func (b bridgeCall) serverStream(ctx context.Context, req *connect.Request[rawFrame], stream *connect.ServerStream[rawFrame]) error {
	ctx, cc, cancel, err := b.start(ctx, req.Header())
	if err != nil {
		return err
	}
	defer cancel()
	gs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, b.m.procedure, b.callOptions(req.Msg.json, new(metadata.MD), new(metadata.MD))...)
	if err != nil {
		return b.end(err)
	}
	if err := gs.SendMsg(req.Msg); err != nil && !errors.Is(err, io.EOF) {
		return b.end(err)
	}
	_ = gs.CloseSend()
	return b.relay(gs, stream.ResponseHeader(), stream.ResponseTrailer(), func(f *rawFrame) error { return stream.Send(f) })
}

func (b bridgeCall) bidi(ctx context.Context, stream *connect.BidiStream[rawFrame, rawFrame]) error {
	ctx, cc, cancelDeadline, err := b.start(ctx, stream.RequestHeader())
	if err != nil {
		return err
	}
	defer cancelDeadline()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	json := strings.Contains(stream.RequestHeader().Get("Content-Type"), "json")
	gs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, b.m.procedure, b.callOptions(json, new(metadata.MD), new(metadata.MD))...)
	if err != nil {
		return b.end(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		for {
			f, err := stream.Receive()
			if errors.Is(err, io.EOF) {
				sendErr <- gs.CloseSend()
				return
			}
			if err != nil {
				sendErr <- err
				cancel() // the caller's side broke: end the remote call
				return
			}
			if err := gs.SendMsg(f); err != nil {
				sendErr <- nil // RecvMsg tells why
				return
			}
		}
	}()
	err = b.relay(gs, stream.ResponseHeader(), stream.ResponseTrailer(), stream.Send)
	// The remote has ended the call. When the caller's side broke first
	// (a message over the limit), that is the error; a caller still
	// sending is not waited for: returning ends its side.
	select {
	case serr := <-sendErr:
		if serr != nil && !errors.Is(serr, io.EOF) {
			return serr
		}
	default:
	}
	return err
}

// relay sends the remote's headers, messages and trailers of a stream to
// the caller.
func (b bridgeCall) relay(gs grpc.ClientStream, header, trailer http.Header, send func(*rawFrame) error) error {
	md, err := gs.Header()
	if err == nil && md != nil {
		copyIncoming(header, md)
		if err := send(nil); err != nil {
			return err
		}
	}
	for {
		f := new(rawFrame)
		err := gs.RecvMsg(f)
		if errors.Is(err, io.EOF) {
			copyIncoming(trailer, gs.Trailer())
			return b.end(nil)
		}
		if err != nil {
			return withMetadata(b.end(err), nil, gs.Trailer())
		}
		if err := send(f); err != nil {
			return err
		}
	}
}

// connectError turns a grpc-go error into the connect error the caller
// gets: the same code, message and details; calls that reached no endpoint
// name the service.
func (r *remote) connectError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return connect.NewError(connect.CodeUnknown, err)
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable && !strings.Contains(msg, r.Service) && isTransportError(msg) {
		msg = fmt.Sprintf("goms: service %s (remote %q, targets %s): %s", r.Service, r.Name, strings.Join(r.Targets, ", "), msg)
	}
	ce := connect.NewError(connect.Code(st.Code()), errors.New(msg))
	for _, d := range st.Proto().GetDetails() {
		if ed, err := connect.NewErrorDetail(d); err == nil {
			ce.AddDetail(ed)
		}
	}
	return ce
}

// isTransportError tells grpc-go's own messages about connections from
// those of a handler.
func isTransportError(msg string) bool {
	for _, s := range []string{"connection error", "no children to pick from", "connection active but", "last connection error", "produced zero addresses", "name resolver", "error reading from server", "transport is closing", "all endpoints"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// withMetadata adds the remote's headers and trailers to a call's error.
func withMetadata(err error, header, trailer metadata.MD) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		copyIncoming(ce.Meta(), header)
		copyIncoming(ce.Meta(), trailer)
	}
	return err
}

// endpointFailure tells the codes that say an endpoint, not the call, is
// at fault.
func endpointFailure(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Unimplemented, codes.DataLoss, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// outgoingMetadata is the metadata sent for a caller's headers: all but
// those of the protocols and of HTTP itself, binary values decoded.
func outgoingMetadata(h http.Header) metadata.MD {
	md := make(metadata.MD, len(h))
	for k, vs := range h {
		if !forwardedHeader(k) {
			continue
		}
		key := strings.ToLower(k)
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				if raw, err := connect.DecodeBinaryHeader(v); err == nil {
					md[key] = append(md[key], string(raw))
				}
			}
			continue
		}
		md[key] = vs
	}
	return md
}

// forwardedHeader tells whether a caller's header travels to the remote.
func forwardedHeader(canonical string) bool {
	switch canonical {
	case "Content-Type", "Content-Length", "Content-Encoding", "Accept-Encoding", "Accept", "Te", "Trailer",
		"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Host", "User-Agent", "X-User-Agent", "X-Grpc-Web",
		"Proxy-Connection", "Proxy-Authorization", "Http2-Settings", "Origin", "Referer":
		return false
	}
	return !strings.HasPrefix(canonical, "Connect-") && !strings.HasPrefix(canonical, "Grpc-") && !strings.HasPrefix(canonical, ":")
}

// copyIncoming adds a remote's metadata to headers, binary values encoded
// as connect expects; grpc-go's own keys stay out.
func copyIncoming(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") || k == "content-type" || k == "te" {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		if strings.HasSuffix(k, "-bin") {
			for _, v := range vs {
				h[ck] = append(h[ck], connect.EncodeBinaryHeader([]byte(v)))
			}
			continue
		}
		h[ck] = append(h[ck], vs...)
	}
}

// unaryHandler serves Server.Client's unary calls of a remote method.
// Calls in the Connect protocol, which generated clients speak unless told
// otherwise, are translated here, straight from the request's bytes to
// grpc-go and back, without a connect handler in between; other protocols
// go through the bridge's connect handler.
func (r *remote) unaryHandler(m *remoteMethod, bridge http.Handler) http.Handler {
	b := bridgeCall{r: r, m: m}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ct := req.Header.Get("Content-Type")
		json := ct == "application/json"
		if req.Method != http.MethodPost || (ct != "application/proto" && !json) || req.Header.Get("Content-Encoding") != "" {
			bridge.ServeHTTP(w, req)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, int64(r.s.cfg.MaxMessageBytes)+1))
		if err != nil {
			writeError(w, req, connect.NewError(connect.CodeCanceled, err))
			return
		}
		if len(body) > r.s.cfg.MaxMessageBytes {
			writeError(w, req, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("goms: request of %s is over the limit of %d bytes", m.procedure, r.s.cfg.MaxMessageBytes)))
			return
		}
		ctx, cc, cancel, err := b.start(req.Context(), req.Header)
		if err != nil {
			writeError(w, req, err.(*connect.Error)) //nolint:errorlint // start returns *connect.Error
			return
		}
		defer cancel()
		res, header, trailer, err := b.invoke(ctx, cc, &rawFrame{data: body, json: json})
		if err != nil {
			writeError(w, req, withMetadata(b.end(err), header, trailer).(*connect.Error)) //nolint:errorlint // end returns *connect.Error
			return
		}
		_ = b.end(nil)
		h := w.Header()
		copyIncoming(h, header)
		for k, vs := range trailer {
			if strings.HasPrefix(k, "grpc-") {
				continue
			}
			tk := "Trailer-" + http.CanonicalHeaderKey(k)
			if strings.HasSuffix(k, "-bin") {
				for _, v := range vs {
					h[tk] = append(h[tk], connect.EncodeBinaryHeader([]byte(v)))
				}
				continue
			}
			h[tk] = append(h[tk], vs...)
		}
		h["Content-Type"] = []string{ct}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.data)
	})
}
