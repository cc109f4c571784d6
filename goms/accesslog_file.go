package goms

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
)

// defaultAccessBuffer is the size of the access log file's buffer unless
// Log.AccessBuffer says otherwise.
const defaultAccessBuffer = 1 << 20

// accessFile writes access log records as JSON lines to a file through a
// buffer that a goroutine writes out every accessFlushInterval, or sooner
// when it is a quarter full: a call costs the formatting of its record
// and a copy, not a write to the disk. When the disk falls behind and the
// buffer is full, records are dropped and counted, and the count is
// reported at warn level. close writes out what is left.
type accessFile struct {
	f      *os.File
	logger *slog.Logger
	level  string

	mu      sync.Mutex
	buf     []byte // records not written yet
	spare   []byte // the buffer being written out
	max     int
	dropped int64
	closed  bool

	second atomic.Pointer[recordSecond] // of the last record

	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once // starts the writer
}

// accessFlushInterval bounds how long a record waits in the buffer.
const accessFlushInterval = 200 * time.Millisecond

func openAccessFile(path string, size int, level slog.Level, logger *slog.Logger) (*accessFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("goms: log.access_file: %w", err)
	}
	return &accessFile{
		f: f, logger: logger, level: level.String(),
		buf: make([]byte, 0, size), spare: make([]byte, 0, size), max: size,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}, nil
}

// start runs the writer, until close.
func (a *accessFile) start() {
	a.once.Do(func() { go a.run() })
}

var recordPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// record appends the record of one call.
func (a *accessFile) record(procedure string, peer connect.Peer, id string, start time.Time, err error, reqBytes, resBytes, reqMsgs, resMsgs int) {
	bp := recordPool.Get().(*[]byte)
	b := appendAccessRecord((*bp)[:0], &a.second, time.Now(), a.level, procedure, peer, id, start, err, reqBytes, resBytes, reqMsgs, resMsgs)
	a.mu.Lock()
	if a.closed || len(a.buf)+len(b) > a.max {
		a.dropped++
		a.mu.Unlock()
	} else {
		a.buf = append(a.buf, b...)
		soon := len(a.buf) >= a.max/4
		a.mu.Unlock()
		if soon {
			select {
			case a.wake <- struct{}{}:
			default:
			}
		}
	}
	*bp = b
	recordPool.Put(bp)
}

func (a *accessFile) run() {
	defer close(a.stopped)
	tick := time.NewTicker(accessFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-tick.C:
		case <-a.wake:
		}
		a.flush()
	}
}

// flush writes out the buffered records and reports drops. Only the
// writer goroutine, or close once it has stopped, calls it.
func (a *accessFile) flush() error {
	a.mu.Lock()
	out := a.buf
	a.buf = a.spare[:0]
	dropped := a.dropped
	a.dropped = 0
	a.mu.Unlock()
	var err error
	if len(out) > 0 {
		_, err = a.f.Write(out)
	}
	a.mu.Lock()
	a.spare = out[:0]
	a.mu.Unlock()
	if err != nil {
		a.logger.Error("goms: access log: writing records", "file", a.f.Name(), "err", err)
	}
	if dropped > 0 {
		a.logger.Warn("goms: access log: dropped records, the file is written slower than calls end", "file", a.f.Name(), "dropped", dropped)
	}
	return err
}

// close writes out every record and closes the file. Records of calls
// that end afterwards are dropped and counted in the log.
func (a *accessFile) close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	started := true
	a.once.Do(func() { started = false })
	if started {
		close(a.stop)
		<-a.stopped
	}
	err := a.flush()
	return errors.Join(err, a.f.Close())
}

// appendAccessRecord appends one record, in the shape slog's JSON handler
// gives the access log interceptor's records: time, level, msg, then the
// attributes, the duration in nanoseconds.
func appendAccessRecord(b []byte, second *atomic.Pointer[recordSecond], now time.Time, level, procedure string, peer connect.Peer, id string, start time.Time, err error, reqBytes, resBytes, reqMsgs, resMsgs int) []byte {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	b = append(b, `{"time":"`...)
	b = appendRFC3339Nano(b, second, now)
	b = append(b, `","level":`...)
	b = appendJSONString(b, level)
	b = append(b, `,"msg":"goms: call","procedure":`...)
	b = appendJSONString(b, procedure)
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, peer.Protocol)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(now.Sub(start)), 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, int64(reqBytes), 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, int64(resBytes), 10)
	b = append(b, `,"request_messages":`...)
	b = strconv.AppendInt(b, int64(reqMsgs), 10)
	b = append(b, `,"response_messages":`...)
	b = strconv.AppendInt(b, int64(resMsgs), 10)
	b = append(b, `,"peer":`...)
	b = appendJSONString(b, peer.Addr)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, id)
	if err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, err.Error())
	}
	return append(b, "}\n"...)
}

// recordSecond is the part of a record's time that changes once a
// second: "2006-01-02T15:04:05" and the zone, "Z07:00".
type recordSecond struct {
	unix         int64
	loc          *time.Location
	prefix, zone string
}

// appendRFC3339Nano appends t as t.AppendFormat(b, time.RFC3339Nano) does,
// formatting the date, the time to the second and the zone once a second
// (they take most of the formatting of a record's time) and keeping them
// in last.
func appendRFC3339Nano(b []byte, last *atomic.Pointer[recordSecond], t time.Time) []byte {
	unix := t.Unix()
	sec := last.Load()
	if sec == nil || sec.unix != unix || sec.loc != t.Location() {
		full := t.Truncate(time.Second).Format(time.RFC3339)
		sec = &recordSecond{unix: unix, loc: t.Location(), prefix: full[:19], zone: full[19:]}
		last.Store(sec)
	}
	b = append(b, sec.prefix...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, sec.zone...)
}

// jsonSafe marks the bytes a JSON string holds as they are.
var jsonSafe = func() (safe [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\'
	}
	return safe
}()

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
