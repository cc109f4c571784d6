package goms

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// accessLogInterceptor writes one record per call once it ends, at
// Config.Log.AccessLevel, with the fields a reader of logs needs to follow
// a call.
type accessLogInterceptor struct {
	logger *slog.Logger
	level  slog.Level
	file   *accessFile // when set, records go there instead
}

func (a accessLogInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		if a.file != nil || a.logger.Enabled(ctx, a.level) {
			var resBytes int
			if res != nil {
				resBytes = messageSize(res.Any())
			}
			a.log(ctx, req.Spec().Procedure, req.Peer(), RequestIDFrom(ctx), start, err, messageSize(req.Any()), resBytes, 1, boolInt(res != nil))
		}
		return res, err
	}
}

func (accessLogInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a accessLogInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		counted := &countingConn{StreamingHandlerConn: conn}
		err := next(ctx, counted)
		if a.file != nil || a.logger.Enabled(ctx, a.level) {
			a.log(ctx, conn.Spec().Procedure, conn.Peer(), RequestIDFrom(ctx), start, err, counted.recvBytes, counted.sentBytes, counted.recv, counted.sent)
		}
		return err
	}
}

func (a accessLogInterceptor) log(ctx context.Context, procedure string, peer connect.Peer, id string, start time.Time, err error, reqBytes, resBytes, reqMsgs, resMsgs int) {
	if a.file != nil {
		a.file.record(procedure, peer, id, start, err, reqBytes, resBytes, reqMsgs, resMsgs)
		return
	}
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	attrs := []slog.Attr{
		slog.String("procedure", procedure),
		slog.String("protocol", peer.Protocol),
		slog.String("code", code),
		slog.Duration("duration", time.Since(start)),
		slog.Int("request_bytes", reqBytes),
		slog.Int("response_bytes", resBytes),
		slog.Int("request_messages", reqMsgs),
		slog.Int("response_messages", resMsgs),
		slog.String("peer", peer.Addr),
		slog.String("request_id", id),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	a.logger.LogAttrs(ctx, a.level, "goms: call", attrs...)
}

// countingConn counts the messages and bytes of a stream.
type countingConn struct {
	connect.StreamingHandlerConn
	recv, sent           int
	recvBytes, sentBytes int
}

func (c *countingConn) Receive(m any) error {
	err := c.StreamingHandlerConn.Receive(m)
	if err == nil {
		c.recv++
		c.recvBytes += messageSize(m)
	}
	return err
}

func (c *countingConn) Send(m any) error {
	err := c.StreamingHandlerConn.Send(m)
	if err == nil && m != nil {
		c.sent++
		c.sentBytes += messageSize(m)
	}
	return err
}

// messageSize returns the encoded size of m. It takes the size a Size or
// Marshal of m left in it, when m has not changed since: the access log
// and the metrics each size a call's messages (and connect-go sizes the
// messages it sends), and only the first of them pays. A handler that
// sizes a message, then changes it, has its earlier size counted.
func messageSize(m any) int {
	if pm, ok := m.(proto.Message); ok {
		return cachedSize.Size(pm)
	}
	return 0
}

var cachedSize = proto.MarshalOptions{UseCachedSize: true}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func asConnectError(err error) *connect.Error {
	var ce *connect.Error
	if err != nil && errors.As(err, &ce) {
		return ce
	}
	return nil
}
