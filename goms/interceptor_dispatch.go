package goms

import (
	"context"
	"sync"

	"connectrpc.com/connect"
)

// dispatchInterceptor is the first step of every call a handler built
// with HandlerOptions serves, whatever interceptors its rules select: it
// gives the call its request id (RequestIDHeader), sets its server
// deadline (MethodConfig.Timeout, MaxTimeout), runs the chain of
// interceptors its configuration selects, and records a failure for the
// status page. connect wraps a handler once per procedure, before the
// procedure is known, so the chain is built at the first call and reused
// after that.
type dispatchInterceptor struct {
	chains *chains
	// propagate keeps the request's headers in the context for
	// Config.Propagate.
	propagate bool
	log       *admissionLog
	status    *statusBoard // nil unless the status page is on
	// edge leaves out the validation of messages, which an edge forwards
	// as bytes: the remote validates them.
	edge bool
}

func (d dispatchInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	var once sync.Once
	var chain connect.UnaryFunc
	var limits deadlines
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		once.Do(func() {
			chain = next
			for _, ic := range d.chains.interceptors(req.Spec().Procedure, d.edge) {
				chain = ic.WrapUnary(chain)
			}
			limits = deadlinesOf(d.chains.rules, req.Spec().Procedure, false)
		})
		id := requestID(req.Header())
		ctx = context.WithValue(ctx, requestIDKey{}, id)
		if d.propagate {
			ctx = context.WithValue(ctx, inboundHeaderKey{}, req.Header())
		}
		ctx, cancel := limits.apply(ctx, d.log, req.Spec().Procedure)
		if cancel != nil {
			defer cancel()
		}
		res, err := chain(ctx, req)
		if res != nil {
			res.Header().Set(RequestIDHeader, id)
		} else if ce := asConnectError(err); ce != nil {
			ce.Meta().Set(RequestIDHeader, id)
		}
		if err != nil && d.status != nil {
			d.status.failed(req.Spec().Procedure, err, id)
		}
		return res, err
	}
}

func (d dispatchInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (d dispatchInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	var once sync.Once
	var chain connect.StreamingHandlerFunc
	var limits deadlines
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		once.Do(func() {
			chain = next
			for _, ic := range d.chains.interceptors(conn.Spec().Procedure, d.edge) {
				chain = ic.WrapStreamingHandler(chain)
			}
			limits = deadlinesOf(d.chains.rules, conn.Spec().Procedure, conn.Spec().StreamType != connect.StreamTypeUnary)
		})
		id := requestID(conn.RequestHeader())
		conn.ResponseHeader().Set(RequestIDHeader, id)
		ctx = context.WithValue(ctx, requestIDKey{}, id)
		if d.propagate {
			ctx = context.WithValue(ctx, inboundHeaderKey{}, conn.RequestHeader())
		}
		ctx, cancel := limits.apply(ctx, d.log, conn.Spec().Procedure)
		if cancel != nil {
			defer cancel()
		}
		err := chain(ctx, conn)
		if err != nil && d.status != nil {
			d.status.failed(conn.Spec().Procedure, err, id)
		}
		return err
	}
}
