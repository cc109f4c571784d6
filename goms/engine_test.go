package goms

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Request returns the bytes an HTTP/2 client sends to open a connection
// and start one request with the given method and content type.
func h2Request(t testing.TB, method, contentType string) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(http2Preface)
	fr := http2.NewFramer(&buf, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: method},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "example"},
		{Name: ":path", Value: "/goms.v1.GoMsService/Get"},
		{Name: "content-type", Value: contentType},
	} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// routeBytes runs route on a connection whose peer sends data and then
// stays open.
func routeBytes(t testing.TB, data []byte) (bool, []byte, error) {
	t.Helper()
	server, client := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { _, _ = client.Write(data) }()
	return sniff(server, time.Now().Add(time.Second))
}

func TestRoute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
		grpc bool
	}{
		{"grpc", h2Request(t, "POST", "application/grpc"), true},
		{"grpc+proto", h2Request(t, "POST", "application/grpc+proto"), true},
		// grpc-go refuses Content-Types not in lower case, which
		// net/http's engine serves.
		{"grpc upper case", h2Request(t, "POST", "Application/GRPC"), false},
		{"grpc-web over h2", h2Request(t, "POST", "application/grpc-web+proto"), false},
		{"connect json over h2", h2Request(t, "POST", "application/json"), false},
		{"connect get over h2", h2Request(t, "GET", ""), false},
		{"grpc content type with GET", h2Request(t, "GET", "application/grpc"), false},
		{"http/1.1", []byte("POST /goms.v1.GoMsService/Get HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"garbage", []byte("\x16\x03\x01\x02\x00"), false},
		{"preface then garbage", append([]byte(http2Preface), "not a frame at all, just text"...), false},
		{"preface then silence", []byte(http2Preface), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			grpc, seen, err := routeBytes(t, tt.data)
			if err != nil {
				t.Fatalf("route: %v", err)
			}
			if grpc != tt.grpc {
				t.Errorf("route to grpc engine = %v, want %v", grpc, tt.grpc)
			}
			if !bytes.HasPrefix(tt.data, seen) || len(seen) == 0 {
				t.Errorf("route returned %q, which is not a prefix of what was sent", seen)
			}
		})
	}
}

func TestRouteTimesOutSilentConnections(t *testing.T) {
	t.Parallel()
	server, client := net.Pipe()
	defer client.Close()
	defer server.Close()
	start := time.Now()
	_, seen, err := sniff(server, time.Now().Add(50*time.Millisecond))
	if err == nil || len(seen) != 0 {
		t.Fatalf("route on a silent connection = %q, %v; want a timeout and nothing read", seen, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("route took %v to give up", d)
	}
}

// FuzzRoute checks that no input makes the router panic or lose bytes:
// whatever it read must be handed on, unchanged, to the chosen server. It
// reads through the connection guard, bounding header blocks to 16 KiB,
// which must close the connection exactly when a block outgrows that.
// The corpus holds the attacks of docs/security.md: header blocks split
// over CONTINUATION frames, blocks of HPACK table size updates only, and
// partial prefaces.
func FuzzRoute(f *testing.F) {
	f.Add(h2Request(f, "POST", "application/grpc"))
	f.Add(h2Request(f, "POST", "application/json"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte(http2Preface))
	f.Add(append([]byte(http2Preface), 0, 0, 0, 4, 0, 0, 0, 0, 0))
	const maxBlock = 16 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := net.Pipe()
		defer client.Close()
		defer server.Close()
		go func() { _, _ = client.Write(data) }()
		g := newGuardedConn(server, nil, maxBlock)
		_, seen, _ := sniff(g, time.Now().Add(20*time.Millisecond))
		if !bytes.HasPrefix(data, seen) {
			t.Fatalf("route returned %q, not a prefix of the input", seen)
		}
		if g.tripped.Load() && !blockTooLarge(data, maxBlock) {
			t.Fatalf("the guard closed a connection whose header blocks all fit in %d bytes", maxBlock)
		}
	})
}

// blockTooLarge reports whether the HTTP/2 frames after the preface in
// data hold a header block larger than max bytes, reading the frame
// headers with x/net's parser.
func blockTooLarge(data []byte, max int) bool {
	rest, ok := bytes.CutPrefix(data, []byte(http2Preface))
	if !ok {
		return false
	}
	r := bytes.NewReader(rest)
	block := 0
	for {
		h, err := http2.ReadFrameHeader(r)
		if err != nil {
			return false
		}
		_, _ = r.Seek(int64(h.Length), io.SeekCurrent)
		switch h.Type {
		case http2.FrameHeaders, http2.FramePushPromise:
			block = int(h.Length)
		case http2.FrameContinuation:
			block += int(h.Length)
		default:
			continue
		}
		if block > max {
			return true
		}
		if h.Flags.Has(http2.FlagHeadersEndHeaders) {
			block = 0
		}
	}
}

// TestFrameScanner checks the header block bound on frames fed whole and
// a byte at a time: a block may hold max bytes over any number of
// CONTINUATION frames, the next block starts from zero, and HTTP/1.x is
// not followed.
func TestFrameScanner(t *testing.T) {
	t.Parallel()
	const max = 1000
	frames := func(build func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		b.WriteString(http2Preface)
		fr := http2.NewFramer(&b, nil)
		_ = fr.WriteSettings()
		build(fr)
		return b.Bytes()
	}
	fill := func(n int) []byte { return bytes.Repeat([]byte{0x20}, n) }
	tests := []struct {
		name    string
		data    []byte
		tripped bool
	}{
		{"block-at-the-bound", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: fill(400)})
			_ = fr.WriteContinuation(1, false, fill(400))
			_ = fr.WriteContinuation(1, true, fill(200))
		}), false},
		{"block-over-the-bound", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: fill(400)})
			_ = fr.WriteContinuation(1, false, fill(400))
			_ = fr.WriteContinuation(1, true, fill(201))
		}), true},
		{"padding-counts", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: fill(900), PadLength: 100, EndHeaders: true})
		}), true},
		{"blocks-one-after-another", frames(func(fr *http2.Framer) {
			for id := uint32(1); id < 20; id += 2 {
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fill(600)})
				_ = fr.WriteContinuation(id, true, fill(400))
				_ = fr.WriteData(id, true, fill(5000))
			}
		}), false},
		{"http1", append([]byte("POST / HTTP/1.1\r\n"), fill(5000)...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			whole := frameScanner{max: max}
			bytewise := frameScanner{max: max}
			var errBytewise error
			for i := range tt.data {
				if errBytewise = bytewise.scan(tt.data[i : i+1]); errBytewise != nil {
					break
				}
			}
			if err := whole.scan(tt.data); (err != nil) != tt.tripped || (errBytewise != nil) != tt.tripped {
				t.Errorf("scan = %v, a byte at a time %v; want an error: %v", err, errBytewise, tt.tripped)
			}
		})
	}
}
