package tracing

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
)

// unsampledServer is the server interceptor when no new trace is ever
// recorded (Config.SampleRatio 0). A call whose caller sent no trace
// context (no traceparent, no baggage) cannot be sampled then, so it skips
// otelconnect's span, whose making costs a tenth of a small call, and gets
// only what that unrecorded span would have given it: a new trace context,
// not sampled, for its outgoing calls to carry, so that the services it
// calls do not start traces of their own. Calls that carry trace context
// go through otelconnect.
type unsampledServer struct {
	traced connect.Interceptor
}

// hasTraceContext reports whether a request carries trace context.
func hasTraceContext(h http.Header) bool {
	return h.Get("Traceparent") != "" || h.Get("Baggage") != ""
}

// unsampledRoot returns ctx with a new trace context that is not sampled.
func unsampledRoot(ctx context.Context) context.Context {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.LittleEndian.PutUint64(tid[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(tid[8:], rand.Uint64())
	binary.LittleEndian.PutUint64(sid[:], rand.Uint64()|1) // never the invalid zero id
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
}

func (u unsampledServer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	withSpan := u.traced.WrapUnary(next)
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !traced(ctx, req.Spec()) {
			return next(ctx, req)
		}
		if hasTraceContext(req.Header()) {
			return withSpan(ctx, req)
		}
		return next(unsampledRoot(ctx), req)
	}
}

func (u unsampledServer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return u.traced.WrapStreamingClient(next)
}

func (u unsampledServer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	withSpan := u.traced.WrapStreamingHandler(next)
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !traced(ctx, conn.Spec()) {
			return next(ctx, conn)
		}
		if hasTraceContext(conn.RequestHeader()) {
			return withSpan(ctx, conn)
		}
		return next(unsampledRoot(ctx), conn)
	}
}
