package goms

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// drainInterceptor turns the cancellation of calls cut by shutdown into
// CodeUnavailable, the code gRPC clients retry on another replica, instead
// of the CodeCanceled a cancelled context would give.
type drainInterceptor struct{}

func (drainInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, drainError(ctx, err)
	}
}

func (drainInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (drainInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return drainError(ctx, next(ctx, conn))
	}
}

func drainError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || !errors.Is(context.Cause(ctx), errShuttingDown) {
		return err
	}
	if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeCanceled {
		return connect.NewError(connect.CodeUnavailable, errShuttingDown)
	}
	return err
}
