package goms

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// headerBlockSlack is what a header block may hold beyond MaxHeaderBytes:
// the padding and priority fields of its HEADERS frame and the few
// dynamic table size updates an encoder may put first. Decoded header
// fields cost at least their encoded bytes, so a block larger than
// MaxHeaderBytes plus this slack is never a header list net/http or
// grpc-go would accept.
const headerBlockSlack = 16 << 10

// errHeaderBlockTooLarge ends a connection whose header block outgrew the
// listener's bound.
var errHeaderBlockTooLarge = errors.New("goms: HTTP/2 header block too large")

// guardedConn is a connection as both engines read it: decrypted, when
// the listener speaks TLS, and watched for what the HTTP/2 servers of
// net/http and grpc-go do not bound themselves:
//
//   - A header block (HEADERS or PUSH_PROMISE and its CONTINUATION frames)
//     is bounded in bytes, not only in decoded header fields: a block of
//     HPACK table size updates decodes to no field at all, and net/http
//     and grpc-go read such a block for as long as the peer sends it. The
//     frames are followed from their 9-byte headers alone; nothing else is
//     decoded.
//   - The first request's headers are due headerDeadline after the
//     connection was accepted, whichever server reads them and however
//     many times it sets its own deadline: arm makes the first deadline set
//     on the connection no later than that.
type guardedConn struct {
	net.Conn
	tls *tls.Conn // the TLS layer when the listener speaks TLS, else nil

	frames  frameScanner // used by Read only: one reader at a time
	tripped atomic.Bool  // the header block bound closed the connection
	// bodies times the request messages of a connection served by
	// grpc-go; nil on others. written follows the frames grpc-go writes,
	// to see the streams it ends.
	bodies   *bodyClocks
	written  frameHeaders
	rd       *bufio.Reader // reads ahead for grpc-go, whose own reads are frame by frame
	draining atomic.Bool

	mu             sync.Mutex
	armed          bool
	headerDeadline time.Time

	stateOnce sync.Once
	state     *tls.ConnectionState
}

// newGuardedConn wraps c, on which TLS is served with tlsConfig unless
// it is nil, bounding its HTTP/2 header blocks to maxHeaderBlock bytes.
func newGuardedConn(c net.Conn, tlsConfig *tls.Config, maxHeaderBlock int) *guardedConn {
	g := &guardedConn{Conn: c}
	if tlsConfig != nil {
		g.tls = tls.Server(c, tlsConfig)
		g.Conn = g.tls
	}
	g.frames.max = maxHeaderBlock
	return g
}

// arm makes the next deadline set on the connection, read or both, no
// later than d: the server the connection is handed to measures its
// header timeout from the accept, not from the hand-over.
func (c *guardedConn) arm(d time.Time) {
	c.mu.Lock()
	c.armed, c.headerDeadline = true, d
	c.mu.Unlock()
}

// clamp returns the deadline to set instead of t.
func (c *guardedConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		c.armed = false
		if t.IsZero() || t.After(c.headerDeadline) {
			return c.headerDeadline
		}
	}
	return t
}

// SetDeadline sets the connection's deadlines, the first one no later
// than the armed header deadline.
func (c *guardedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }

// SetReadDeadline sets the connection's read deadline, the first one no
// later than the armed header deadline.
func (c *guardedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// Read reads from the connection, and closes it when a header block
// outgrows the bound.
func (c *guardedConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.rd != nil {
		n, err = c.rd.Read(p)
	} else {
		n, err = c.Conn.Read(p)
	}
	if err != nil && c.tls != nil {
		refusePlainHTTP(err)
	}
	if n > 0 && c.frames.state != scanOff {
		if serr := c.frames.scan(p[:n]); serr != nil {
			c.tripped.Store(true)
			_ = c.Conn.Close()
			return 0, serr
		}
	}
	return n, err
}

// timeBodies makes the connection obey a listener's MinBodyRate (see
// bodyClocks). Call it before the connection is handed to grpc-go, which
// must read it unbuffered: the connection buffers instead, so that what
// it has handed out is exactly what grpc-go has read, and the stream of
// the last header block it scanned is the one grpc-go's tap is called for.
func (c *guardedConn) timeBodies(rate int, grace time.Duration) {
	c.bodies = &bodyClocks{rate: rate, grace: grace, conn: c, streams: make(map[uint32]*streamClock)}
	c.frames.bodies = c.bodies
	c.rd = bufio.NewReaderSize(c.Conn, 32<<10)
}

// Write writes to the connection; on a connection whose bodies are timed
// it notes the streams the server ends.
func (c *guardedConn) Write(p []byte) (int, error) {
	if c.bodies == nil {
		return c.Conn.Write(p)
	}
	c.written.scan(p, c.bodies)
	n, err := c.Conn.Write(p)
	c.bodies.afterWrite()
	return n, err
}

// drain closes the connection after the answer to a cut call: its
// writing side at once, so that the answer goes out before the end, and
// the rest a little later, as net/http does, so that bytes the client
// sent meanwhile do not make the close a reset that could lose the answer.
func (c *guardedConn) drain() {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	c.draining.Store(true)
	time.AfterFunc(500*time.Millisecond, func() { _ = c.Conn.Close() })
}

// Close closes the connection, unless it is draining: it then closes
// itself.
func (c *guardedConn) Close() error {
	if c.draining.Load() {
		return nil
	}
	return c.Conn.Close()
}

// tlsState returns the connection's TLS state once its handshake is
// done, nil on cleartext listeners.
func (c *guardedConn) tlsState() *tls.ConnectionState {
	if c.tls == nil {
		return nil
	}
	c.stateOnce.Do(func() {
		s := c.tls.ConnectionState()
		c.state = &s
	})
	return c.state
}

// refusePlainHTTP answers, as net/http's TLS servers do, a client that
// sent plain HTTP to a TLS listener, when err is the failed handshake.
func refusePlainHTTP(err error) {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil {
		return
	}
	switch string(re.RecordHeader[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		_ = re.Conn.Close()
	}
}

// guardedListener hands net/http the connections of a listener as
// guardedConns, their header deadline armed at the accept. It does the
// TLS itself, so that the bound applies to the decrypted bytes; net/http
// then sees a cleartext connection, speaking HTTP/1.1 or, after ALPN
// chose h2, the HTTP/2 preface.
type guardedListener struct {
	net.Listener
	tlsConfig      *tls.Config
	headerTimeout  time.Duration
	maxHeaderBlock int
}

func (l guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := newGuardedConn(c, l.tlsConfig, l.maxHeaderBlock)
	g.arm(time.Now().Add(l.headerTimeout))
	return g, nil
}

// Scanner states: matching the HTTP/2 client preface, following frames,
// or off for a connection that is not HTTP/2 with prior knowledge.
const (
	scanPreface uint8 = iota
	scanFrames
	scanOff
)

// frameScanner follows the frames of an HTTP/2 connection through their
// 9-byte headers and reports a header block larger than max bytes.
type frameScanner struct {
	max   int
	state uint8
	n     int     // preface bytes matched, or frame header bytes held
	hdr   [9]byte // the frame header being read
	skip  uint32  // payload bytes of the current frame still to come
	block int     // bytes of the header block in progress

	// lastBlock is the stream of the last header block begun.
	lastBlock uint32
	// bodies, when set, is given the data of DATA frames.
	bodies    *bodyClocks
	data      uint32 // stream of the DATA frame being read, 0 for none
	padded    bool   // its pad length is still to come
	dataLeft  uint32 // data bytes of it still to come, padding excluded
	endStream bool   // it ends its stream
}

func (s *frameScanner) scan(p []byte) error {
	for len(p) > 0 {
		switch {
		case s.state == scanOff:
			return nil
		case s.state == scanPreface:
			k := min(len(p), len(http2Preface)-s.n)
			if string(p[:k]) != http2Preface[s.n:s.n+k] {
				s.state = scanOff // HTTP/1.x, or garbage the server refuses
				return nil
			}
			s.n += k
			p = p[k:]
			if s.n == len(http2Preface) {
				s.state, s.n = scanFrames, 0
			}
		case s.skip > 0 && s.data != 0:
			p = s.scanData(p)
		case s.skip > 0:
			k := min(uint32(len(p)), s.skip)
			s.skip -= k
			p = p[k:]
		default:
			k := copy(s.hdr[s.n:], p)
			s.n += k
			p = p[k:]
			if s.n < len(s.hdr) {
				return nil
			}
			s.n = 0
			length := uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2])
			s.skip = length
			if s.bodies != nil {
				s.noteFrame(length)
			}
			switch http2.FrameType(s.hdr[3]) {
			case http2.FrameHeaders, http2.FramePushPromise:
				s.block = int(length)
				s.lastBlock = binary.BigEndian.Uint32(s.hdr[5:]) & (1<<31 - 1)
			case http2.FrameContinuation:
				s.block += int(length)
			default:
				continue
			}
			if s.block > s.max {
				return fmt.Errorf("%w: more than %d bytes", errHeaderBlockTooLarge, s.max)
			}
			if http2.Flags(s.hdr[4]).Has(http2.FlagHeadersEndHeaders) {
				s.block = 0
			}
		}
	}
	return nil
}

// withALPN returns a copy of a listener's TLS configuration whose ALPN
// offers h2 and http/1.1, unless it names protocols itself; nil stays
// nil.
func withALPN(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"h2", "http/1.1"}
	}
	return c
}

// tlsStater is a connection that knows its TLS state: net/http sees
// goms's TLS connections as cleartext ones, and the handler gets the state
// back through the connection's context.
type tlsStater interface {
	tlsState() *tls.ConnectionState
}

// tlsConnKey is the context key of a TLS connection's tlsStater.
type tlsConnKey struct{}

// withTLSState returns r with the TLS state of its connection, if it has
// one.
func withTLSState(r *http.Request) *http.Request {
	t, ok := r.Context().Value(tlsConnKey{}).(tlsStater)
	if !ok {
		return r
	}
	state := t.tlsState()
	if state == nil {
		return r
	}
	r = r.WithContext(r.Context())
	r.TLS = state
	return r
}
