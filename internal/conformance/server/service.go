package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	conformancev1 "github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1"
	"github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1/conformancev1connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// conformanceService answers each call as its request's response definition
// says, and echoes what it received (headers, timeout, messages, query) in
// the payload or, for errors, in the error details. Unimplemented is left to
// the embedded type, which answers CodeUnimplemented.
type conformanceService struct {
	conformancev1connect.UnimplementedConformanceServiceHandler
}

func (conformanceService) Unary(ctx context.Context, req *connect.Request[conformancev1.UnaryRequest]) (*connect.Response[conformancev1.UnaryResponse], error) {
	info, err := requestInfo(ctx, req.Header(), req.Msg)
	if err != nil {
		return nil, err
	}
	payload, err := respondOnce(ctx, req.Msg.GetResponseDefinition(), info)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&conformancev1.UnaryResponse{Payload: payload}), nil
}

func (conformanceService) IdempotentUnary(ctx context.Context, req *connect.Request[conformancev1.IdempotentUnaryRequest]) (*connect.Response[conformancev1.IdempotentUnaryResponse], error) {
	info, err := requestInfo(ctx, req.Header(), req.Msg)
	if err != nil {
		return nil, err
	}
	if req.HTTPMethod() == http.MethodGet {
		info.ConnectGetInfo = &conformancev1.ConformancePayload_ConnectGetInfo{
			QueryParams: headers(queryFrom(ctx)),
		}
	}
	payload, err := respondOnce(ctx, req.Msg.GetResponseDefinition(), info)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&conformancev1.IdempotentUnaryResponse{Payload: payload}), nil
}

func (conformanceService) ClientStream(ctx context.Context, stream *connect.ClientStream[conformancev1.ClientStreamRequest]) (*connect.Response[conformancev1.ClientStreamResponse], error) {
	var (
		def  *conformancev1.UnaryResponseDefinition
		msgs []proto.Message
	)
	for stream.Receive() {
		if len(msgs) == 0 {
			def = stream.Msg().GetResponseDefinition()
		}
		msgs = append(msgs, stream.Msg())
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	info, err := requestInfo(ctx, stream.RequestHeader(), msgs...)
	if err != nil {
		return nil, err
	}
	payload, err := respondOnce(ctx, def, info)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&conformancev1.ClientStreamResponse{Payload: payload}), nil
}

func (conformanceService) ServerStream(ctx context.Context, req *connect.Request[conformancev1.ServerStreamRequest], stream *connect.ServerStream[conformancev1.ServerStreamResponse]) error {
	def := req.Msg.GetResponseDefinition()
	if def == nil {
		return nil
	}
	info, err := requestInfo(ctx, req.Header(), req.Msg)
	if err != nil {
		return err
	}
	addHeaders(stream.ResponseHeader(), def.GetResponseHeaders())
	addHeaders(stream.ResponseTrailer(), def.GetResponseTrailers())
	// Send the headers now, so that the client sees them before any delay.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for i, data := range def.GetResponseData() {
		payload := &conformancev1.ConformancePayload{Data: data}
		if i == 0 {
			payload.RequestInfo = info
		}
		if err := sleep(ctx, def.GetResponseDelayMs()); err != nil {
			return err
		}
		if err := stream.Send(&conformancev1.ServerStreamResponse{Payload: payload}); err != nil {
			return err
		}
	}
	if def.GetError() == nil {
		return nil
	}
	if len(def.GetResponseData()) > 0 {
		info = nil
	}
	return newError(def.GetError(), info)
}

func (conformanceService) BidiStream(ctx context.Context, stream *connect.BidiStream[conformancev1.BidiStreamRequest, conformancev1.BidiStreamResponse]) error {
	var (
		def        *conformancev1.StreamResponseDefinition
		fullDuplex bool
		received   int
		sent       int
		// pending holds the requests not yet echoed: all of them in half
		// duplex, those since the last response in full duplex.
		pending []proto.Message
	)
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		received++
		pending = append(pending, msg)
		if received == 1 {
			def = msg.GetResponseDefinition()
			fullDuplex = msg.GetFullDuplex()
			if fullDuplex && def != nil {
				addHeaders(stream.ResponseHeader(), def.GetResponseHeaders())
				addHeaders(stream.ResponseTrailer(), def.GetResponseTrailers())
				if err := stream.Send(nil); err != nil {
					return err
				}
			}
		}
		if !fullDuplex {
			continue
		}
		if sent == len(def.GetResponseData()) {
			if def.GetError() != nil {
				// Nothing left to send: end with the error at once.
				break
			}
			continue
		}
		info, err := bidiInfo(ctx, stream.RequestHeader(), sent == 0, pending)
		if err != nil {
			return err
		}
		if err := sleep(ctx, def.GetResponseDelayMs()); err != nil {
			return err
		}
		res := &conformancev1.BidiStreamResponse{Payload: &conformancev1.ConformancePayload{
			Data:        def.GetResponseData()[sent],
			RequestInfo: info,
		}}
		if err := stream.Send(res); err != nil {
			return err
		}
		sent++
		pending = nil
	}
	if def == nil {
		return nil
	}
	if !fullDuplex {
		addHeaders(stream.ResponseHeader(), def.GetResponseHeaders())
		addHeaders(stream.ResponseTrailer(), def.GetResponseTrailers())
		if err := stream.Send(nil); err != nil {
			return err
		}
		for i, data := range def.GetResponseData() {
			payload := &conformancev1.ConformancePayload{Data: data}
			if i == 0 {
				info, err := bidiInfo(ctx, stream.RequestHeader(), true, pending)
				if err != nil {
					return err
				}
				payload.RequestInfo = info
			}
			if err := sleep(ctx, def.GetResponseDelayMs()); err != nil {
				return err
			}
			if err := stream.Send(&conformancev1.BidiStreamResponse{Payload: payload}); err != nil {
				return err
			}
			sent++
		}
	}
	if def.GetError() == nil {
		return nil
	}
	var info *conformancev1.ConformancePayload_RequestInfo
	if sent == 0 {
		var err error
		if info, err = bidiInfo(ctx, stream.RequestHeader(), true, pending); err != nil {
			return err
		}
	}
	return newError(def.GetError(), info)
}

// bidiInfo is the request information of a bidi stream response: complete
// for the first one, only the requests echoed for the others.
func bidiInfo(ctx context.Context, header http.Header, first bool, msgs []proto.Message) (*conformancev1.ConformancePayload_RequestInfo, error) {
	if first {
		return requestInfo(ctx, header, msgs...)
	}
	reqs, err := anys(msgs)
	if err != nil {
		return nil, err
	}
	return &conformancev1.ConformancePayload_RequestInfo{Requests: reqs}, nil
}

// respondOnce answers a single-response call (unary or client stream) as
// def says: headers and trailers, then after the delay either the payload
// or the error, which carries info in its details. A nil def gets a
// payload with info only.
func respondOnce(ctx context.Context, def *conformancev1.UnaryResponseDefinition, info *conformancev1.ConformancePayload_RequestInfo) (*conformancev1.ConformancePayload, error) {
	if def != nil {
		if call, ok := connect.CallInfoForHandlerContext(ctx); ok {
			// Set through the call, not the response, so that errors carry
			// them too.
			addHeaders(call.ResponseHeader(), def.GetResponseHeaders())
			addHeaders(call.ResponseTrailer(), def.GetResponseTrailers())
		}
	}
	if err := sleep(ctx, def.GetResponseDelayMs()); err != nil {
		return nil, err
	}
	if def.GetError() != nil {
		return nil, newError(def.GetError(), info)
	}
	return &conformancev1.ConformancePayload{Data: def.GetResponseData(), RequestInfo: info}, nil
}

// requestInfo echoes the request headers, the timeout the handler sees, and
// the request messages.
func requestInfo(ctx context.Context, header http.Header, msgs ...proto.Message) (*conformancev1.ConformancePayload_RequestInfo, error) {
	reqs, err := anys(msgs)
	if err != nil {
		return nil, err
	}
	info := &conformancev1.ConformancePayload_RequestInfo{
		RequestHeaders: headers(header),
		Requests:       reqs,
	}
	if deadline, ok := ctx.Deadline(); ok {
		info.TimeoutMs = proto.Int64(time.Until(deadline).Milliseconds())
	}
	return info, nil
}

// newError builds the error def describes, with info, when not nil, added
// to its details.
func newError(def *conformancev1.Error, info *conformancev1.ConformancePayload_RequestInfo) error {
	var cause error
	if def.Message != nil {
		cause = errors.New(def.GetMessage())
	}
	err := connect.NewError(connect.Code(def.GetCode()), cause)
	details := def.GetDetails()
	if info != nil {
		echo, echoErr := anypb.New(info)
		if echoErr != nil {
			return connect.NewError(connect.CodeInternal, echoErr)
		}
		details = append(details, echo)
	}
	for _, d := range details {
		detail, detailErr := connect.NewErrorDetail(d)
		if detailErr != nil {
			return connect.NewError(connect.CodeInternal, detailErr)
		}
		err.AddDetail(detail)
	}
	return err
}

// sleep waits ms milliseconds. A cancelled call stops waiting at once, but
// one whose deadline passes waits the whole delay: answering right at the
// deadline races the client's own timer, which may then cut the error body
// short, and the runner reports the truncated body as malformed JSON. The
// client gives up at its deadline either way.
func sleep(ctx context.Context, ms uint32) error {
	if ms == 0 {
		return nil
	}
	timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			<-timer.C
		}
		return ctx.Err()
	}
}

func anys(msgs []proto.Message) ([]*anypb.Any, error) {
	out := make([]*anypb.Any, len(msgs))
	for i, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		out[i] = a
	}
	return out, nil
}

// headers converts HTTP headers, or query parameters, to their proto form.
func headers[H ~map[string][]string](h H) []*conformancev1.Header {
	out := make([]*conformancev1.Header, 0, len(h))
	for name, values := range h {
		out = append(out, &conformancev1.Header{Name: name, Value: values})
	}
	return out
}

func addHeaders(h http.Header, hs []*conformancev1.Header) {
	for _, header := range hs {
		for _, v := range header.GetValue() {
			h.Add(header.GetName(), v)
		}
	}
}

// queryKey is the context key of the query of a Connect GET request.
type queryKey struct{}

// withQuery makes the query of GET requests available to the handler,
// which connect-go does not expose, for IdempotentUnary to echo.
func withQuery(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			r = r.WithContext(context.WithValue(r.Context(), queryKey{}, r.URL.Query()))
		}
		h.ServeHTTP(w, r)
	})
}

func queryFrom(ctx context.Context) url.Values {
	q, _ := ctx.Value(queryKey{}).(url.Values)
	return q
}
