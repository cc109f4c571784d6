package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// http1Caller is a wrk-like client of the Connect JSON call over HTTP/1.1,
// cheap enough that the server, not the client's one core, bounds the
// throughput. Each worker takes a connection of its own from a pool,
// writes a request built once, and reads the answer with a parser that
// knows just the HTTP/1.1 framing a response needs: the status line,
// Content-Length, chunked Transfer-Encoding, Connection: close, or a body
// that ends with the connection.
//
// Validation stays that of jsonCaller at a fraction of the cost: every
// response must have status 200 and a body; the first of each connection
// is decoded with protojson and its item checked; every later one must be
// the same bytes, which a server's protojson output is, run after run of
// one binary.
type http1Caller struct {
	addr    string
	url     string // for errors
	req     []byte // the whole request
	nameLen int
	dialer  net.Dialer
	free    chan *http1Conn // connections not in use, at most one per worker
}

// http1Conn is a connection and the buffers that outlive it: when the
// server closes it, the next call dials a new one into the same struct.
type http1Conn struct {
	nc net.Conn // nil until dialled, and once closed
	br *bufio.Reader
	// body holds the last response's body.
	body []byte
	// valid holds the first body nc got, once checked (never empty then).
	valid []byte
	// ctx is the context whose end unblocks nc; stop unregisters it.
	ctx  context.Context
	stop func() bool
}

const (
	// http1ReadBuffer is the size of a connection's read buffer, and so
	// the longest status or header line accepted.
	http1ReadBuffer = 4 << 10
	// http1MaxBody bounds the size of a response body.
	http1MaxBody = 16 << 20
)

// newHTTP1Caller returns the raw HTTP/1.1 client of the Connect JSON call
// for the server at addr; body is the JSON request, conns the number of
// connections kept open, one per worker.
func newHTTP1Caller(addr string, body []byte, nameLen, conns int) *http1Caller {
	// The headers net/http's client sent for jsonCaller, in its order:
	// no Accept-Encoding, as compression is never asked for.
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\n"+
		"Host: %s\r\n"+
		"User-Agent: Go-http-client/1.1\r\n"+
		"Content-Length: %d\r\n"+
		"Connect-Protocol-Version: 1\r\n"+
		"Content-Type: application/json\r\n"+
		"\r\n", gomsv1connect.GoMsServiceGetProcedure, addr, len(body))
	return &http1Caller{
		addr:    addr,
		url:     "http://" + addr + gomsv1connect.GoMsServiceGetProcedure,
		req:     append(req, body...),
		nameLen: nameLen,
		dialer:  net.Dialer{Timeout: 5 * time.Second},
		free:    make(chan *http1Conn, max(conns, 1)),
	}
}

// Call makes one call on a connection of the pool, dialling one if none
// is free.
func (c *http1Caller) Call(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var cn *http1Conn
	select {
	case cn = <-c.free:
	default:
		cn = new(http1Conn)
	}
	err := c.roundTrip(ctx, cn)
	select {
	case c.free <- cn:
	default:
		cn.close()
	}
	return err
}

// Close closes the connections of the pool; call it once no call runs.
func (c *http1Caller) Close() {
	for {
		select {
		case cn := <-c.free:
			cn.close()
		default:
			return
		}
	}
}

// errNoAnswer marks a failure of a reused connection before the server
// sent a byte of its answer: the server had closed it, as when it stops
// idle connections, and the request may be sent again on a new one.
var errNoAnswer = errors.New("the connection ended before the response began")

// roundTrip sends the request on cn, dialling it if needed, and reads and
// checks the response. On a reused connection that the server closed
// before answering, it dials once more and resends, as net/http's client
// does for a connection it finds closed. Any failure closes the
// connection.
func (c *http1Caller) roundTrip(ctx context.Context, cn *http1Conn) error {
	for {
		// A failure closes cn, so a resend is always on a fresh
		// connection, and happens once at most.
		fresh := cn.nc == nil
		if fresh {
			if err := cn.dial(ctx, &c.dialer, c.addr); err != nil {
				return fmt.Errorf("load: %s: %w", c.url, err)
			}
		}
		cn.watch(ctx)
		err := c.exchange(cn, !fresh)
		if err == nil {
			return nil
		}
		cn.close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !fresh && errors.Is(err, errNoAnswer) {
			continue
		}
		return fmt.Errorf("load: %s: %w", c.url, err)
	}
}

// exchange writes the request on cn and reads and checks the response,
// closing cn if the server said it would close it. reused tells whether cn
// carried a call before.
func (c *http1Caller) exchange(cn *http1Conn, reused bool) error {
	if _, err := cn.nc.Write(c.req); err != nil {
		if reused {
			return fmt.Errorf("%w: writing the request: %w", errNoAnswer, err)
		}
		return fmt.Errorf("writing the request: %w", err)
	}
	if _, err := cn.br.Peek(1); err != nil {
		if reused {
			return fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		return fmt.Errorf("reading the response: %w", err)
	}
	status, closing, err := cn.readResponse()
	if err != nil {
		return err
	}
	if closing {
		cn.close()
	}
	if status != 200 {
		return fmt.Errorf("status %d: %.200s", status, cn.body)
	}
	if len(cn.body) == 0 {
		return errors.New("status 200 with an empty body")
	}
	if len(cn.valid) > 0 {
		if !bytes.Equal(cn.body, cn.valid) {
			return fmt.Errorf("the body differs from the first one of the connection, which was checked: got %.200q, first %.200q", cn.body, cn.valid)
		}
		return nil
	}
	var msg gomsv1.GetResponse
	if err := protojson.Unmarshal(cn.body, &msg); err != nil {
		return fmt.Errorf("decoding the body: %w", err)
	}
	if err := checkItem(&msg, c.nameLen); err != nil {
		return err
	}
	cn.valid = append(cn.valid[:0], cn.body...)
	return nil
}

// dial connects cn to addr; the first response on it will be decoded and
// checked again.
func (cn *http1Conn) dial(ctx context.Context, d *net.Dialer, addr string) error {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	cn.nc, cn.valid = nc, cn.valid[:0]
	if cn.br == nil {
		cn.br = bufio.NewReaderSize(nc, http1ReadBuffer)
	} else {
		cn.br.Reset(nc)
	}
	return nil
}

// watch makes the end of ctx fail the reads and writes of cn under way:
// ctx is that of the call, but all calls of a run share one, so that it
// is registered once per connection.
func (cn *http1Conn) watch(ctx context.Context) {
	if cn.ctx == ctx {
		return
	}
	if cn.stop != nil {
		cn.stop()
	}
	nc := cn.nc
	cn.ctx = ctx
	cn.stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
}

// close closes cn's connection, if open, keeping its buffers.
func (cn *http1Conn) close() {
	if cn.stop != nil {
		cn.stop()
		cn.ctx, cn.stop = nil, nil
	}
	if cn.nc != nil {
		_ = cn.nc.Close()
		cn.nc = nil
	}
}

// readResponse reads a response from cn: its status code, its body into
// cn.body, and whether the server closes the connection after it.
func (cn *http1Conn) readResponse() (status int, closing bool, err error) {
	line, err := cn.readLine("the status line")
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK", the reason being optional.
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, false, fmt.Errorf("malformed status line %.100q", line)
	}
	status, ok := parseDecimal(line[9:12])
	if !ok {
		return 0, false, fmt.Errorf("malformed status line %.100q", line)
	}
	http10 := line[7] == '0'
	closing = http10
	length, chunked := -1, false
	for {
		line, err := cn.readLine("the headers")
		if err != nil {
			return 0, false, err
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return 0, false, fmt.Errorf("malformed header line %.100q", line)
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case equalFold(name, "Content-Length"):
			n, ok := parseDecimal(value)
			if !ok || (length >= 0 && n != length) {
				return 0, false, fmt.Errorf("bad Content-Length %.100q", value)
			}
			length = n
		case equalFold(name, "Transfer-Encoding"):
			if !equalFold(value, "chunked") || chunked {
				return 0, false, fmt.Errorf("unsupported Transfer-Encoding %.100q: this client reads chunked only", value)
			}
			chunked = true
		case equalFold(name, "Connection"):
			if hasToken(value, "close") {
				closing = true
			} else if http10 && hasToken(value, "keep-alive") {
				closing = false
			}
		}
	}
	cn.body = cn.body[:0]
	switch {
	case status < 200 || status == 204 || status == 304:
		// No body, whatever the headers say.
	case chunked && length >= 0:
		return 0, false, errors.New("both Content-Length and Transfer-Encoding")
	case chunked:
		err = cn.readChunked()
	case length >= 0:
		err = cn.readBody(length)
	default:
		// Neither: the body ends with the connection.
		closing = true
		err = cn.readToEOF()
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the body: %w", err)
	}
	return status, closing, nil
}

// readBody appends n bytes to cn.body.
func (cn *http1Conn) readBody(n int) error {
	if n > http1MaxBody-len(cn.body) {
		return fmt.Errorf("longer than %d bytes", http1MaxBody)
	}
	start := len(cn.body)
	cn.body = slices.Grow(cn.body, n)[:start+n]
	_, err := io.ReadFull(cn.br, cn.body[start:])
	return err
}

// readChunked appends a chunked body to cn.body and skips its trailers.
func (cn *http1Conn) readChunked() error {
	for {
		line, err := cn.readLine("a chunk size")
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		size, ok := parseHex(bytes.TrimSpace(line))
		if !ok {
			return fmt.Errorf("malformed chunk size %.100q", line)
		}
		if size == 0 {
			break
		}
		if err := cn.readBody(size); err != nil {
			return err
		}
		if line, err = cn.readLine("the end of a chunk"); err != nil {
			return err
		}
		if len(line) != 0 {
			return fmt.Errorf("%d bytes after a chunk's data, before its CRLF", len(line))
		}
	}
	for {
		line, err := cn.readLine("the trailers")
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// readToEOF appends to cn.body what the connection sends until it closes.
func (cn *http1Conn) readToEOF() error {
	for {
		if len(cn.body) == cap(cn.body) {
			if len(cn.body) >= http1MaxBody {
				return fmt.Errorf("longer than %d bytes", http1MaxBody)
			}
			cn.body = slices.Grow(cn.body, http1ReadBuffer)
		}
		n, err := cn.br.Read(cn.body[len(cn.body):cap(cn.body)])
		cn.body = cn.body[:len(cn.body)+n]
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its CRLF (or LF); the slice is
// valid until the next read. what names the line in errors.
func (cn *http1Conn) readLine(what string) ([]byte, error) {
	line, err := cn.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("reading %s: a line longer than %d bytes", what, http1ReadBuffer)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseDecimal parses a non-negative decimal number of at most 9 digits.
func parseDecimal(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseHex parses a chunk size of at most 7 hexadecimal digits, enough
// for http1MaxBody.
func parseHex(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 7 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int(c-'0')
		case 'a' <= lower(c) && lower(c) <= 'f':
			n = n<<4 | int(lower(c)-'a'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

// equalFold reports whether b equals s, ASCII case ignored.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token, ASCII
// case ignored.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if equalFold(bytes.TrimSpace(item), token) {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
