package goms

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// errShuttingDown is the cause of the cancellation of calls still running
// when the grace period ends.
var errShuttingDown = errors.New("server is shutting down: retry the call on another replica or after restart")

// flushTimeout bounds the wait, after calls were cancelled, for their final
// statuses to reach the clients before connections are closed.
const flushTimeout = 2 * time.Second

// shutdown drains and stops every listener, as Serve documents. Close cuts
// it short.
func (s *Server) shutdown() {
	s.mu.Lock()
	if s.state == stateClosed || s.state == stateShuttingDown {
		s.mu.Unlock()
		return
	}
	s.state = stateShuttingDown
	s.ready.Store(false)
	for _, l := range s.listeners {
		for _, name := range l.routes.names {
			s.health.SetStatus(name, grpchealth.StatusNotServing)
		}
	}
	for name := range s.userHealth {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.health.SetStatus("", grpchealth.StatusNotServing)
	s.mu.Unlock()
	s.logger.Info("goms: shutting down", "grace", s.cfg.ShutdownTimeout)
	defer func() {
		s.mu.Lock()
		s.state = stateClosed
		s.mu.Unlock()
		// Outgoing connections close last: draining calls may use them.
		if s.stopRemotes != nil {
			s.stopRemotes()
		}
		s.closeAccessFile()
	}()

	if s.cfg.DrainDelay > 0 {
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-s.closing.Done():
		}
	}
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	stopGrace := context.AfterFunc(s.closing, cancel) // Close ends the grace period
	defer stopGrace()
	if s.shutdownAll(grace) {
		s.cancelBase(errShuttingDown)
		s.logger.Info("goms: stopped")
		return
	}
	// The grace period is over: end what still runs, let the statuses
	// flush, then close whatever is left.
	s.cancelBase(errShuttingDown)
	s.logger.Warn("goms: grace period over, cancelling the calls still running")
	flush, cancelFlush := context.WithTimeout(context.Background(), flushTimeout)
	defer cancelFlush()
	stopFlush := context.AfterFunc(s.closing, cancelFlush)
	defer stopFlush()
	if !s.shutdownAll(flush) {
		for _, l := range s.listeners {
			l.close()
		}
	}
	s.logger.Info("goms: stopped")
}

// shutdownAll shuts every listener down in parallel and reports whether
// all of them finished before ctx ended.
func (s *Server) shutdownAll(ctx context.Context) bool {
	var wg sync.WaitGroup
	done := make([]bool, len(s.listeners))
	for i, l := range s.listeners {
		wg.Go(func() { done[i] = l.shutdown(ctx) })
	}
	wg.Wait()
	for _, ok := range done {
		if !ok {
			return false
		}
	}
	return true
}

// cutAtShutdown returns a context of parent that also ends, with the
// server's cause, when shutdown cancels the calls still running at the end
// of its grace period. Calls on net/http get that from their base context;
// in-process calls and the grpc engine's do not. Call cancel and stop once
// the call is over.
func (s *Server) cutAtShutdown(parent context.Context) (ctx context.Context, cancel context.CancelCauseFunc, stop func() bool) {
	ctx, cancel = context.WithCancelCause(parent)
	stop = context.AfterFunc(s.base, func() { cancel(context.Cause(s.base)) })
	return ctx, cancel, stop
}

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
