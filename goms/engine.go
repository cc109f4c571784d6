package goms

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// EngineNetHTTP serves every connection with net/http. It is the only
	// engine of http and gateway listeners.
	EngineNetHTTP Engine = "net/http"
	// EngineGRPC serves the gRPC connections of a grpc-mode listener with
	// grpc-go's HTTP/2 transport, bridged into the same connect handlers,
	// which costs less CPU per call than net/http's HTTP/2 server. It is
	// the default of grpc-mode listeners. Each
	// connection is routed by its first bytes: HTTP/1.1, and HTTP/2 whose
	// first request is not gRPC, still go to net/http so that those callers
	// get goms's error in their own protocol. A later non-gRPC request on a
	// connection that started with gRPC gets grpc-go's bare HTTP 415.
	EngineGRPC Engine = "grpc"
)

// http2Preface is what every HTTP/2 client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffWindow is how long the router waits, after an HTTP/2 preface, for
// the first request's headers. grpc-go clients send none until the server
// answers the preface, so a connection that stays quiet is routed to the
// gRPC engine when the window closes.
const sniffWindow = 25 * time.Millisecond

// sniff reads the start of a connection and reports whether it belongs to
// the gRPC engine. It returns the bytes read, which the chosen server must
// see first. It returns an error when the connection ends, or deadline
// passes, before its first bytes tell HTTP/2 from HTTP/1.x: the caller
// closes such a connection rather than let another server wait again.
func sniff(c net.Conn, deadline time.Time) (grpc bool, seen []byte, err error) {
	rec := &recordingReader{r: c}
	if err := c.SetReadDeadline(deadline); err != nil {
		return false, nil, err
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	var buf [len(http2Preface)]byte
	for n := 0; n < len(buf); {
		m, err := rec.Read(buf[n:])
		n += m
		if !strings.HasPrefix(http2Preface, string(buf[:n])) {
			return false, rec.buf, nil // HTTP/1.x or garbage: net/http answers
		}
		if err != nil {
			return false, rec.buf, err
		}
	}
	if d := time.Now().Add(sniffWindow); d.Before(deadline) {
		deadline = d
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return false, nil, err
	}
	framer := http2.NewFramer(io.Discard, rec)
	framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	framer.MaxHeaderListSize = 1 << 20
	// Until the server's SETTINGS arrive, which the router never sends,
	// a client's frames are at most the protocol's initial 16 KiB.
	framer.SetMaxReadFrameSize(16 << 10)
	for range 8 {
		f, err := framer.ReadFrame()
		var netErr net.Error
		switch {
		case errors.As(err, &netErr) && netErr.Timeout():
			return true, rec.buf, nil
		case err != nil:
			return false, rec.buf, nil // net/http reports the protocol error
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			return isGRPCContentType(h.PseudoValue("method"), h), rec.buf, nil
		}
	}
	return false, rec.buf, nil
}

// isGRPCContentType reports whether a connection's first request is one
// grpc-go serves: a POST whose Content-Type is application/grpc, alone or
// followed by "+" or ";", spelled in lower case as grpc-go requires (it
// refuses other spellings). Any other request goes to net/http, whose
// handlers read Content-Type as classify does, so that both engines
// answer it alike.
func isGRPCContentType(method string, h *http2.MetaHeadersFrame) bool {
	if method != "POST" {
		return false
	}
	for _, f := range h.RegularFields() {
		if f.Name == "content-type" {
			rest, ok := strings.CutPrefix(f.Value, "application/grpc")
			return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
		}
	}
	return false
}

// recordingReader keeps every byte it reads.
type recordingReader struct {
	r   io.Reader
	buf []byte
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// replayConn is a connection whose first bytes were already read: Read
// returns them again before reading on, and then lets them go: the
// connection may stay open for hours.
type replayConn struct {
	net.Conn
	seen   []byte
	tls    *tls.ConnectionState
	remote net.Addr
}

func newReplayConn(c net.Conn, seen []byte, state *tls.ConnectionState) net.Conn {
	rc := &replayConn{Conn: c, seen: seen, tls: state, remote: c.RemoteAddr()}
	if rc.remote != nil {
		rc.remote = addrString{Addr: rc.remote, s: rc.remote.String()}
	}
	return rc
}

// RemoteAddr returns the peer's address, whose String every call of the
// connection asks for, worked out once.
func (c *replayConn) RemoteAddr() net.Addr { return c.remote }

// addrString is a net.Addr whose String is computed once.
type addrString struct {
	net.Addr
	s string
}

func (a addrString) String() string { return a.s }

func (c *replayConn) Read(p []byte) (int, error) {
	if c.seen != nil {
		n := copy(p, c.seen)
		c.seen = c.seen[n:]
		if len(c.seen) == 0 {
			c.seen = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// tlsState returns the connection's TLS state, nil on cleartext
// listeners.
func (c *replayConn) tlsState() *tls.ConnectionState { return c.tls }

// chanListener is a net.Listener fed with connections by a router.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// deliver hands c to Accept, or closes it if the listener is closed.
func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
