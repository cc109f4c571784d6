package goms

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
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

// The grpc engine's clocks: grpc-go reads a connection's bodies itself, so
// the connection follows their frames (see guardedConn.timeBodies).

// noteFrame starts following a DATA frame, or ends a stream its peer
// reset, for bodies.
func (s *frameScanner) noteFrame(length uint32) {
	id := binary.BigEndian.Uint32(s.hdr[5:]) & (1<<31 - 1)
	flags := http2.Flags(s.hdr[4])
	switch http2.FrameType(s.hdr[3]) {
	case http2.FrameData:
		if length == 0 {
			if flags.Has(http2.FlagDataEndStream) {
				s.bodies.ended(id)
			}
			return
		}
		s.data, s.dataLeft = id, length
		s.padded = flags.Has(http2.FlagDataPadded)
		s.endStream = flags.Has(http2.FlagDataEndStream)
	case http2.FrameRSTStream:
		s.bodies.ended(id)
	}
}

// scanData follows the payload of a DATA frame and returns the rest of p.
func (s *frameScanner) scanData(p []byte) []byte {
	if s.padded {
		s.padded = false
		pad := uint32(p[0])
		s.skip--
		s.dataLeft = max(s.dataLeft-1, pad) - pad // net/http and grpc-go refuse too much padding
		return p[1:]
	}
	k := min(uint32(len(p)), s.skip)
	if d := min(k, s.dataLeft); d > 0 {
		s.bodies.follow(s.data, p[:d])
		s.dataLeft -= d
	}
	s.skip -= k
	if s.skip == 0 {
		if s.endStream {
			s.bodies.ended(s.data)
		}
		s.data = 0
	}
	return p[k:]
}

// frameHeaders follows the frames a server writes, from their headers.
type frameHeaders struct {
	hdr  [9]byte
	n    int
	skip uint32
}

// scan tells b of each stream the written frames end: HEADERS with
// END_STREAM, RST_STREAM. A client that stops sending the rest of a
// message then is not slow.
func (w *frameHeaders) scan(p []byte, b *bodyClocks) {
	for len(p) > 0 {
		if w.skip > 0 {
			k := min(uint32(len(p)), w.skip)
			w.skip -= k
			p = p[k:]
			continue
		}
		k := copy(w.hdr[w.n:], p)
		w.n += k
		p = p[k:]
		if w.n < len(w.hdr) {
			return
		}
		w.n = 0
		w.skip = uint32(w.hdr[0])<<16 | uint32(w.hdr[1])<<8 | uint32(w.hdr[2])
		id := binary.BigEndian.Uint32(w.hdr[5:]) & (1<<31 - 1)
		switch t, f := http2.FrameType(w.hdr[3]), http2.Flags(w.hdr[4]); {
		case t == http2.FrameRSTStream, t == http2.FrameHeaders && f.Has(http2.FlagHeadersEndStream):
			b.ended(id)
		}
	}
}

// bodyClocks times the request messages of the streams of a connection
// served by grpc-go, which reads a message whole before the handler sees
// any of it: the clock of a message runs from its first byte to its last,
// never between messages, and never once either side has ended the
// stream. When a message has taken longer than grace and its bytes
// average less than rate since it started, its stream's context (made by
// grpc-go's tap, see streamContext) ends with context.DeadlineExceeded:
// grpc-go answers the call with CodeDeadlineExceeded, and once the answer
// is written the connection is closed.
type bodyClocks struct {
	rate  int
	grace time.Duration
	conn  *guardedConn

	mu       sync.Mutex
	streams  map[uint32]*streamClock
	timer    *time.Timer
	next     time.Time   // when the timer fires, zero when it is not armed
	cut      uint32      // the stream cut, 0 before any
	anyCut   atomic.Bool // a stream was cut: writes look for its end
	endedNow bool        // a write being made ends the cut stream
	drained  bool
}

// streamClock is the clock of one stream's pending message.
type streamClock struct {
	env   envelopes
	start time.Time
	got   int64
	ctx   *cutContext // made by grpc-go's tap
}

// cutContext is the context of a stream whose messages are timed: once
// cut it is done, with context.DeadlineExceeded, which grpc-go answers the
// call with. The bridge also ends it, with the shutdown's cause, when the
// server cuts its calls at shutdown (see grpcEngine.handleStream): one
// context per call instead of two.
type cutContext struct {
	context.Context // cancelled by cut, or with a cause at shutdown
	cancel          context.CancelCauseFunc
	cut             atomic.Bool
}

// cutContextKey finds a stream's cutContext among the values grpc-go adds
// on top of it.
type cutContextKey struct{}

func (c *cutContext) Err() error {
	if c.cut.Load() {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

func (c *cutContext) Value(key any) any {
	if key == (cutContextKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// streamContext returns the context of the stream whose header block the
// connection handed grpc-go last, which grpc-go's tap is called for.
func (b *bodyClocks) streamContext(ctx context.Context) context.Context {
	c := &cutContext{}
	c.Context, c.cancel = context.WithCancelCause(ctx)
	id := b.conn.frames.lastBlock // the tap runs on grpc-go's reader
	b.mu.Lock()
	b.streams[id] = &streamClock{ctx: c}
	b.mu.Unlock()
	return c
}

// follow notes the data of a DATA frame of stream id. A stream is followed
// from grpc-go's tap (streamContext), which runs before grpc-go reads the
// stream's data, until either side ends it: data of a stream grpc-go did
// not take, or of one that ended, is not followed, as grpc-go reads no
// more of it, so a message left partial there is not one it waits for.
func (b *bodyClocks) follow(id uint32, p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.streams[id]
	if c == nil {
		return
	}
	for len(p) > 0 {
		n, started, _ := c.env.step(p)
		if started {
			c.start, c.got = time.Now(), 0
			b.arm(c.start.Add(b.grace))
		}
		c.got += int64(n)
		p = p[n:]
	}
}

// ended forgets a stream either side ended or reset.
func (b *bodyClocks) ended(id uint32) {
	b.mu.Lock()
	delete(b.streams, id)
	if b.cut != 0 && id == b.cut {
		b.endedNow = true
	}
	b.mu.Unlock()
}

// afterWrite closes the connection once the answer to the cut stream is
// written.
func (b *bodyClocks) afterWrite() {
	if !b.anyCut.Load() {
		return // nearly always: no lock per write
	}
	b.mu.Lock()
	drain := b.endedNow && !b.drained
	b.drained = b.drained || drain
	b.mu.Unlock()
	if drain {
		b.conn.drain()
	}
}

// cutStream cuts stream id. b.mu is held.
func (b *bodyClocks) cutStream(id uint32, c *streamClock) {
	b.cut = id
	b.anyCut.Store(true)
	c.ctx.cut.Store(true)
	c.ctx.cancel(context.DeadlineExceeded)
}

// arm makes the timer fire at t at the latest. b.mu is held.
func (b *bodyClocks) arm(t time.Time) {
	if b.cut != 0 || !b.next.IsZero() && !t.Before(b.next) {
		return
	}
	b.next = t
	if b.timer == nil {
		b.timer = time.AfterFunc(time.Until(t), b.check)
	} else {
		b.timer.Reset(time.Until(t))
	}
}

// check closes the connection when a pending message is behind the rate,
// and otherwise arms the timer for the next time one could be.
func (b *bodyClocks) check() {
	b.mu.Lock()
	b.next = time.Time{}
	now := time.Now()
	var first time.Time
	if b.cut != 0 {
		b.mu.Unlock()
		return
	}
	for id, c := range b.streams {
		if !c.env.pending() {
			continue
		}
		due := c.start.Add(b.grace)
		if now.After(due) {
			due = c.start.Add(time.Duration(float64(c.got) / float64(b.rate) * float64(time.Second)))
			if !due.After(now) {
				b.cutStream(id, c)
				b.mu.Unlock()
				return
			}
		}
		if first.IsZero() || due.Before(first) {
			first = due
		}
	}
	if !first.IsZero() {
		b.arm(maxTime(first, now.Add(10*time.Millisecond)))
	}
	b.mu.Unlock()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
