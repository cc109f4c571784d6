package goms

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"connectrpc.com/connect"
)

// ErrPanic is the error a call whose handler panicked ends with, under
// CodeInternal. Its text is all the client sees: the panic value and the
// stack go to the server's log only. Interceptors outside recovery can
// recognise such calls with errors.Is(err, ErrPanic).
var ErrPanic = errors.New("internal error")

// recoverInterceptor turns a panic below it into CodeInternal with ErrPanic
// and logs the panic with its stack at error level.
type recoverInterceptor struct {
	logger *slog.Logger
}

func (r recoverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (res connect.AnyResponse, err error) {
		defer func() {
			if v := recover(); v != nil {
				res, err = nil, r.recovered(ctx, req.Spec().Procedure, v)
			}
		}()
		return next(ctx, req)
	}
}

func (recoverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (r recoverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = r.recovered(ctx, conn.Spec().Procedure, v)
			}
		}()
		return next(ctx, conn)
	}
}

func (r recoverInterceptor) recovered(ctx context.Context, procedure string, v any) error {
	if v == http.ErrAbortHandler {
		panic(v) // net/http's way to abort a response on purpose
	}
	r.logger.ErrorContext(ctx, "goms: handler panicked",
		"procedure", procedure, "panic", v, "stack", string(debug.Stack()))
	return connect.NewError(connect.CodeInternal, ErrPanic)
}
