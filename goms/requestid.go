package goms

import (
	"context"
	"math/rand/v2"
)

// RequestIDHeader carries the id of a call. goms takes it from the request
// (up to 128 bytes) or makes one, returns it in the response, puts it in
// the handler's context (RequestIDFrom), in every access log record and, with
// Config.Propagate, in the calls the handler makes. Every call gets one,
// whatever interceptors its rules select.
const RequestIDHeader = "X-Request-Id"

type requestIDKey struct{}

// RequestIDFrom returns the id of the call ctx belongs to, or "" outside a
// call.
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// maxRequestIDLen bounds the ids taken from callers: longer ones are
// replaced, to keep logs and headers small.
const maxRequestIDLen = 128

// requestID returns the id a call's request headers carry, or a new one.
func requestID(h interface{ Get(string) string }) string {
	if id := h.Get(RequestIDHeader); id != "" && len(id) <= maxRequestIDLen {
		return id
	}
	const digits = "0123456789abcdef"
	var b [16]byte
	v := rand.Uint64()
	for i := range b {
		b[i] = digits[v>>(60-4*i)&0xf]
	}
	return string(b[:])
}
