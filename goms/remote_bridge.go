package goms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
	now := time.Now().Unix() // one clock read for the throttle and the budget
	if err := b.r.throttle.admit(now); err != nil {
		b.r.stats.throttled.Add(1)
		return nil, nil, nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s (remote %q): %w", b.r.Service, b.r.Name, err))
	}
	b.r.awaitReady(ctx, cc)
	b.r.stats.calls.Add(1)
	b.r.budget.earn(now)
	ctx, cancel := b.m.deadline(ctx, !b.edge)
	md := outgoingMetadata(header)
	if md == nil {
		if _, ok := metadata.FromOutgoingContext(ctx); !ok {
			return ctx, cc, cancel, nil // no metadata to send, none to replace
		}
	}
	return metadata.NewOutgoingContext(ctx, md), cc, cancel, nil
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

// The codecs as call options, made once.
var (
	protoCodecOption = grpc.ForceCodecV2(grpcProtoCodec)
	jsonCodecOption  = grpc.ForceCodecV2(grpcJSONCodec)
)

func codecOption(json bool) grpc.CallOption {
	if json {
		return jsonCodecOption
	}
	return protoCodecOption
}

func (b bridgeCall) callOptions(json bool, header, trailer *metadata.MD) []grpc.CallOption {
	return []grpc.CallOption{codecOption(json), grpc.Header(header), grpc.Trailer(trailer)}
}

func (b bridgeCall) unary(ctx context.Context, req *connect.Request[rawFrame]) (*connect.Response[rawFrame], error) {
	ctx, cc, cancel, err := b.start(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	defer cancel()
	call, err := b.invoke(ctx, cc, req.Msg)
	defer call.release()
	if err != nil {
		return nil, withMetadata(b.end(err), call.header, call.trailer)
	}
	_ = b.end(nil)
	out := connect.NewResponse(&rawFrame{data: call.res.data, json: call.res.json})
	copyIncoming(out.Header(), call.header)
	copyIncoming(out.Trailer(), call.trailer)
	return out, nil
}

// unaryCall is one unary attempt: its answer, its metadata, and the call
// options that point at them. Attempts that run on the caller's goroutine
// take theirs from a pool.
type unaryCall struct {
	res             rawFrame
	header, trailer metadata.MD
	opts            [3]grpc.CallOption
	pooled          bool
}

var unaryCalls = sync.Pool{New: func() any { return newUnaryCall() }}

func newUnaryCall() *unaryCall {
	c := new(unaryCall)
	c.opts[1], c.opts[2] = grpc.Header(&c.header), grpc.Trailer(&c.trailer)
	return c
}

// pooledUnaryCall returns an attempt from the pool; release gives it back.
func pooledUnaryCall() *unaryCall {
	c := unaryCalls.Get().(*unaryCall)
	c.pooled = true
	return c
}

// release gives a pooled attempt back, once its answer and metadata have
// been handed on.
func (c *unaryCall) release() {
	if c == nil || !c.pooled {
		return
	}
	c.res, c.header, c.trailer = rawFrame{}, nil, nil
	unaryCalls.Put(c)
}

// run sends msg and waits for the answer. Its latency is kept for the
// hedge delay of the methods that may hedge without a fixed one.
func (c *unaryCall) run(ctx context.Context, b bridgeCall, cc *grpc.ClientConn, msg *rawFrame) error {
	c.opts[0] = codecOption(msg.json)
	if !b.m.hedge || b.m.fixedDelay > 0 || !b.r.hedges.allowed(b.r) {
		return cc.Invoke(ctx, b.m.procedure, msg, &c.res, c.opts[:]...)
	}
	start := time.Now()
	err := cc.Invoke(ctx, b.m.procedure, msg, &c.res, c.opts[:]...)
	if err == nil {
		b.m.latency.add(time.Since(start))
	}
	return err
}

// invoke sends a unary call, hedged when its method is and another
// endpoint could take the hedge. The returned attempt is never nil; the
// caller releases it.
func (b bridgeCall) invoke(ctx context.Context, cc *grpc.ClientConn, msg *rawFrame) (*unaryCall, error) {
	if b.m.hedge && b.r.hedges.allowed(b.r) {
		return b.hedge(ctx, cc, msg)
	}
	c := pooledUnaryCall()
	return c, c.run(ctx, b, cc, msg)
}

// hedgeGate tells whether a hedge could go to another endpoint than its
// call's first attempt: not when the remote's only target is an IP
// address. Names may stand for several addresses.
type hedgeGate struct {
	once     sync.Once
	possible bool
}

func (g *hedgeGate) allowed(r *remote) bool {
	g.once.Do(func() {
		host, _, _ := net.SplitHostPort(strings.TrimPrefix(r.Targets[0], "dns:///"))
		g.possible = len(r.Targets) > 1 || net.ParseIP(host) == nil
	})
	return g.possible
}

// hedge sends a side-effect-free call, and a second attempt to another
// endpoint when the first has not answered after the method's hedge delay
// and the retry budget allows it. The first answer that is not a failure
// of its endpoint wins; the other attempt is cancelled. The first attempt
// runs on the caller's goroutine: most calls answer before the delay and
// never start another.
func (b bridgeCall) hedge(ctx context.Context, cc *grpc.ClientConn, msg *rawFrame) (*unaryCall, error) {
	type result struct {
		call *unaryCall
		err  error
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
			// Not pooled: this attempt may outlive the call.
			r := result{call: newUnaryCall()}
			r.err = r.call.run(withPickHint(hctx, &pickHint{avoid: hint.picked()}), b, cc, msg)
			if r.err == nil || !endpointFailure(status.Code(r.err)) {
				cancelFirst() // it won
			}
			second.done <- r
		}()
	})
	first := pooledUnaryCall()
	firstErr := first.run(withPickHint(firstCtx, hint), b, cc, msg)
	timer.Stop()
	second.Lock()
	started, done, cancelSecond := second.started, second.done, second.cancel
	cancelFirst() // no hedge starts from now on
	second.Unlock()
	if !started {
		return first, firstErr
	}
	defer cancelSecond()
	if firstErr == nil || !endpointFailure(status.Code(firstErr)) && status.Code(firstErr) != codes.Canceled {
		return first, firstErr
	}
	// The first failed on its endpoint or was cancelled because the hedge
	// won: the hedge's answer counts.
	r := <-done
	if r.err != nil && firstErr != nil && status.Code(firstErr) != codes.Canceled && ctx.Err() == nil && endpointFailure(status.Code(r.err)) {
		return first, firstErr
	}
	first.release()
	return r.call, r.err
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

// callUnary serves a unary call of Server.Client in the Connect protocol,
// which generated clients speak unless told otherwise: straight from the
// request's bytes to grpc-go and back, with no handler and no second
// request in between. done is false for the requests it leaves to the
// bridge's connect handler: other methods and protocols, GET, compressed
// bodies. The call ends when its caller's context does, or when the
// remote's connections close, after the server's calls have drained.
func (r *remote) callUnary(req *http.Request) (res *http.Response, done bool) {
	m := r.methods[req.URL.Path]
	if m == nil || m.desc.IsStreamingClient() || m.desc.IsStreamingServer() || req.Method != http.MethodPost {
		return nil, false
	}
	ct := req.Header["Content-Type"]
	if len(ct) != 1 || (ct[0] != "application/proto" && ct[0] != "application/json") || len(req.Header["Content-Encoding"]) > 0 {
		return nil, false
	}
	failed := func(err *connect.Error) (*http.Response, bool) {
		return bufferedResponse(req, func(w http.ResponseWriter, _ *bytes.Buffer) { writeError(w, req, err) }), true
	}
	if r.env.base.Err() != nil {
		// After shutdown, as the drain interceptor would say.
		return failed(connect.NewError(connect.CodeUnavailable, context.Cause(r.env.base)))
	}
	body, err := readBody(req, r.env.cfg.MaxMessageBytes)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			return failed(connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("goms: request of %s is over the limit of %d bytes", m.procedure, r.env.cfg.MaxMessageBytes)))
		}
		return failed(connect.NewError(connect.CodeCanceled, err))
	}
	b := bridgeCall{r: r, m: m}
	ctx, cc, cancel, err := b.start(req.Context(), req.Header)
	if err != nil {
		return failed(err.(*connect.Error)) //nolint:errorlint // start returns *connect.Error
	}
	defer cancel()
	call, err := b.invoke(ctx, cc, &rawFrame{data: body, json: ct[0] == "application/json"})
	defer call.release()
	if err != nil {
		return failed(withMetadata(b.end(err), call.header, call.trailer).(*connect.Error)) //nolint:errorlint // end returns *connect.Error
	}
	_ = b.end(nil)
	h := make(http.Header, 1+len(call.header)+len(call.trailer))
	copyIncoming(h, call.header)
	for k, vs := range call.trailer {
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
	h["Content-Type"] = ct
	data := call.res.data
	a := &unaryAnswer{body: frameBody{data: data}}
	a.res = http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Body:          &a.body,
		ContentLength: int64(len(data)),
		Request:       req,
	}
	return &a.res, true
}

// unaryAnswer is a unary call's response and its body, allocated at once.
type unaryAnswer struct {
	res  http.Response
	body frameBody
}

var errBodyTooLarge = errors.New("goms: request body over the limit")

// readBody reads a request's body whole, up to limit bytes.
func readBody(req *http.Request, limit int) ([]byte, error) {
	if req.Body == nil {
		return nil, nil
	}
	if n := req.ContentLength; n >= 0 && n <= int64(limit) {
		// The length generated clients set: one allocation.
		body := make([]byte, n)
		if _, err := io.ReadFull(req.Body, body); err != nil {
			return nil, err
		}
		var one [1]byte
		if k, _ := req.Body.Read(one[:]); k == 0 {
			return body, nil
		}
		// More than announced: read the rest as below.
		body = append(body, one[0])
		rest, err := io.ReadAll(io.LimitReader(req.Body, int64(limit)+1-int64(len(body))))
		body = append(body, rest...)
		if err == nil && len(body) > limit {
			err = errBodyTooLarge
		}
		return body, err
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, int64(limit)+1))
	if err == nil && len(body) > limit {
		err = errBodyTooLarge
	}
	return body, err
}

// frameBody is the body of a unary answer kept whole.
type frameBody struct {
	data []byte
	off  int
}

func (b *frameBody) Read(p []byte) (int, error) {
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	return n, nil
}

// WriteTo lets io.Copy take the bytes without a buffer of its own.
func (b *frameBody) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b.data[b.off:])
	b.off += n
	return int64(n), err
}

func (b *frameBody) Close() error { return nil }
