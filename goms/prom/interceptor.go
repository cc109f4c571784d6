package prom

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/reversTeam/go-ms/goms"
)

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	var last atomic.Pointer[procedureMetrics]
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		m := i.forProcedure(&last, req.Spec().Procedure).forProtocol(req.Peer().Protocol)
		start := time.Now()
		m.inFlight.Inc()
		res, err := next(ctx, req)
		m.inFlight.Dec()
		in, out := m.received, m.sent
		if req.Spec().IsClient {
			in, out = out, in
		}
		in.Observe(float64(messageSize(req.Any())))
		if res != nil {
			out.Observe(float64(messageSize(res.Any())))
		}
		m.done(start, err)
		return res, err
	}
}

// done records the end of a call.
func (m *protocolMetrics) done(start time.Time, err error) {
	c := m.forCode(err)
	c.requests.Inc()
	c.duration.Observe(time.Since(start).Seconds())
	if m.panics != nil && err != nil && errors.Is(err, goms.ErrPanic) {
		m.panics.Inc()
	}
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	var last atomic.Pointer[procedureMetrics]
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		m := i.forProcedure(&last, conn.Spec().Procedure).forProtocol(conn.Peer().Protocol)
		start := time.Now()
		m.inFlight.Inc()
		err := next(ctx, &handlerConn{StreamingHandlerConn: conn, m: m})
		m.inFlight.Dec()
		m.done(start, err)
		return err
	}
}

// handlerConn sizes the messages of a handler's stream.
type handlerConn struct {
	connect.StreamingHandlerConn
	m *protocolMetrics
}

func (c *handlerConn) Receive(msg any) error {
	err := c.StreamingHandlerConn.Receive(msg)
	if err == nil {
		c.m.received.Observe(float64(messageSize(msg)))
	}
	return err
}

func (c *handlerConn) Send(msg any) error {
	err := c.StreamingHandlerConn.Send(msg)
	if err == nil {
		c.m.sent.Observe(float64(messageSize(msg)))
	}
	return err
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	var last atomic.Pointer[procedureMetrics]
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		m := i.forProcedure(&last, spec.Procedure).forProtocol(conn.Peer().Protocol)
		m.inFlight.Inc()
		return &clientConn{StreamingClientConn: conn, m: m, start: time.Now()}
	}
}

// clientConn sizes the messages of a client's stream and records the call
// when the response is closed, with the first error the stream saw.
type clientConn struct {
	connect.StreamingClientConn
	m     *protocolMetrics
	start time.Time
	err   error
	ended atomic.Bool
}

func (c *clientConn) Send(msg any) error {
	err := c.StreamingClientConn.Send(msg)
	if err == nil {
		c.m.sent.Observe(float64(messageSize(msg)))
	}
	return err
}

func (c *clientConn) Receive(msg any) error {
	err := c.StreamingClientConn.Receive(msg)
	switch {
	case err == nil:
		c.m.received.Observe(float64(messageSize(msg)))
	case !errors.Is(err, io.EOF) && c.err == nil:
		c.err = err
	}
	return err
}

func (c *clientConn) CloseResponse() error {
	err := c.StreamingClientConn.CloseResponse()
	if c.ended.CompareAndSwap(false, true) {
		c.m.inFlight.Dec()
		c.m.done(c.start, c.err)
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
