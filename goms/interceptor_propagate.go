package goms

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

type inboundHeaderKey struct{}

// inboundHeader returns the request headers of the call ctx belongs to, when
// Config.Propagate asked for them to be kept.
func inboundHeader(ctx context.Context) http.Header {
	h, _ := ctx.Value(inboundHeaderKey{}).(http.Header)
	return h
}

// propagateInterceptor is the client side of header propagation: a call a
// handler makes carries the request id of the call it serves, and the
// headers Config.Propagate names. Trace context is the tracing plugin's.
type propagateInterceptor struct {
	headers []string
}

func (p propagateInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			p.copy(ctx, req.Header())
		}
		return next(ctx, req)
	}
}

func (p propagateInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		p.copy(ctx, conn.RequestHeader())
		return conn
	}
}

func (propagateInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (p propagateInterceptor) copy(ctx context.Context, out http.Header) {
	if id := RequestIDFrom(ctx); id != "" && out.Get(RequestIDHeader) == "" {
		out.Set(RequestIDHeader, id)
	}
	if len(p.headers) == 0 {
		return
	}
	in := inboundHeader(ctx)
	for _, k := range p.headers {
		if v := in.Values(k); len(v) > 0 && out.Get(k) == "" {
			out[http.CanonicalHeaderKey(k)] = v
		}
	}
}
