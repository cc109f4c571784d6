package goms

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// rateBody is the request body of a call served by net/http on a
// listener with a MinBodyRate. It times the bytes the handler is owed:
//
//   - a unary body (Connect unary, REST, any body that is not a stream of
//     enveloped messages) from the handler's first read until its end;
//   - in a stream (gRPC, binary gRPC-Web, Connect streaming), each message
//     from the first byte of its 5-byte prefix to its last byte. Between
//     whole messages nothing is owed: a stream waiting for its client's
//     next message is idle, not slow.
//
// Once a pending body or message has taken longer than the grace period
// and its bytes average less than the rate since it started, the body's
// read deadline is set to now: the handler's read fails with
// CodeDeadlineExceeded, which it answers in the caller's protocol, and an
// HTTP/1.1 connection is closed after the answer.
type rateBody struct {
	body      io.ReadCloser
	w         http.ResponseWriter
	http1     bool
	enveloped bool
	rate      int
	grace     time.Duration
	l         *listener

	env envelopes // by Read only

	mu      sync.Mutex
	started bool // a unary body's first read happened
	pending bool
	start   time.Time
	got     int64 // bytes of the pending body or message so far
	timer   *time.Timer
	cut     bool
	done    bool // the handler returned
}

// withMinBodyRate makes r's body obey the listener's MinBodyRate. The
// returned function must be called once the handler has returned.
func withMinBodyRate(w http.ResponseWriter, r *http.Request, l *listener) func() {
	b := &rateBody{
		body:      r.Body,
		w:         w,
		http1:     r.ProtoMajor == 1,
		enveloped: enveloped(r),
		rate:      l.MinBodyRate,
		grace:     l.MinBodyRateGrace,
		l:         l,
	}
	r.Body = b
	return b.finish
}

// slowBodyError is the error of a call whose request body came too
// slowly.
func slowBodyError(l *listener) error {
	return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
		"the request body arrived slower than %d bytes/s after %v: listener %q ends such calls (min_body_rate)",
		l.MinBodyRate, l.MinBodyRateGrace, l.Name))
}

// enveloped reports whether a request's body is a stream of enveloped
// messages. gRPC-Web's text format is base64 and its messages cannot be
// told apart without decoding it; browsers send one message, so its body
// is timed as a unary one.
func enveloped(r *http.Request) bool {
	switch classify(r) {
	case protocolGRPC:
		return true
	case protocolGRPCWeb:
		ct := r.Header.Get("Content-Type")
		return !strings.HasPrefix(strings.ToLower(ct), "application/grpc-web-text")
	case protocolConnect:
		ct := r.Header.Get("Content-Type")
		return len(ct) > len("application/connect+") && strings.EqualFold(ct[:len("application/connect+")], "application/connect+")
	}
	return false
}

func (b *rateBody) Read(p []byte) (int, error) {
	if !b.enveloped && !b.started {
		b.mu.Lock()
		b.started = true
		b.begin()
		b.mu.Unlock()
	}
	n, err := b.body.Read(p)
	b.mu.Lock()
	if b.enveloped {
		b.follow(p[:n])
	} else if b.pending {
		b.got += int64(n)
	}
	if err != nil {
		b.end()
	}
	cut := b.cut
	b.mu.Unlock()
	if cut {
		if b.http1 {
			b.w.Header().Set("Connection", "close")
		}
		return n, slowBodyError(b.l)
	}
	return n, err
}

// follow moves through the envelopes of the bytes read, starting and
// ending the clock of each message. b.mu is held.
func (b *rateBody) follow(p []byte) {
	for len(p) > 0 {
		n, started, ended := b.env.step(p)
		if started {
			b.begin()
		}
		if b.pending {
			b.got += int64(n)
		}
		if ended {
			b.end()
		}
		p = p[n:]
	}
}

// begin starts the clock of a pending body or message. b.mu is held.
func (b *rateBody) begin() {
	if b.done || b.cut {
		return
	}
	b.pending, b.start, b.got = true, time.Now(), 0
	if b.timer == nil {
		b.timer = time.AfterFunc(b.grace, b.check)
	} else {
		b.timer.Reset(b.grace)
	}
}

// end stops the clock. b.mu is held.
func (b *rateBody) end() {
	if b.pending {
		b.pending = false
		b.timer.Stop()
	}
}

// check runs on the timer: it cuts the body when it is behind the rate,
// and otherwise looks again when it would be.
func (b *rateBody) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.pending || b.done || b.cut {
		return
	}
	elapsed := time.Since(b.start)
	if elapsed < b.grace {
		b.timer.Reset(b.grace - elapsed) // a stale run for an earlier message
		return
	}
	if owedBy := time.Duration(float64(b.got) / float64(b.rate) * float64(time.Second)); owedBy > elapsed {
		b.timer.Reset(max(owedBy-elapsed, 10*time.Millisecond))
		return
	}
	b.cut = true
	// The handler's pending read fails at once, on HTTP/1.1 and HTTP/2.
	_ = http.NewResponseController(b.w).SetReadDeadline(time.Now())
}

func (b *rateBody) Close() error { return b.body.Close() }

// finish stops the clock for good: the handler has returned, and its
// response writer must not be used any more.
func (b *rateBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	if b.timer != nil {
		b.timer.Stop()
	}
}

// envelopes follows the 5-byte prefixes of a stream of enveloped messages
// (gRPC, gRPC-Web, Connect streaming) to tell where each message starts
// and ends.
type envelopes struct {
	prefix    [5]byte
	prefixN   int
	remaining uint32
}

// step consumes the bytes of p up to the end of the current prefix or
// message, at least one, and reports how many, whether they start a
// message and whether they end one.
func (e *envelopes) step(p []byte) (n int, started, ended bool) {
	if e.prefixN < len(e.prefix) {
		started = e.prefixN == 0
		n = copy(e.prefix[e.prefixN:], p)
		e.prefixN += n
		if e.prefixN == len(e.prefix) {
			e.remaining = binary.BigEndian.Uint32(e.prefix[1:])
			if e.remaining == 0 {
				e.prefixN, ended = 0, true
			}
		}
		return n, started, ended
	}
	k := min(uint32(len(p)), e.remaining)
	e.remaining -= k
	if e.remaining == 0 {
		e.prefixN, ended = 0, true
	}
	return int(k), false, ended
}

// pending reports whether a message has started and not ended.
func (e *envelopes) pending() bool { return e.prefixN > 0 }
