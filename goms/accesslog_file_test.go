package goms

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// TestAppendJSONString checks the access file's string encoding against
// encoding/json's decoder.
func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `"quotes" and \backslash`, "line\nbreak\ttab\r\x00\x1f", "é ü 世界", "bad \xff utf-8 \xc3", "<html>&"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q encodes as %s, not JSON: %v", s, b, err)
			continue
		}
		want := string([]rune(s)) // invalid bytes become U+FFFD
		if got != want {
			t.Errorf("%q encodes as %s, which decodes to %q", s, b, got)
		}
	}
}

// TestAppendRFC3339Nano checks the access file's time format against
// time.RFC3339Nano, through the cache of the second, across seconds and
// zones.
func TestAppendRFC3339Nano(t *testing.T) {
	t.Parallel()
	var last atomic.Pointer[recordSecond]
	base := time.Date(2026, 12, 3, 23, 59, 58, 0, time.UTC)
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -8*3600), time.Local} {
		for _, sec := range []time.Duration{0, time.Second, 2 * time.Second} {
			for _, ns := range []int{0, 1, 10, 100, 120000000, 123456789, 999999999, 500, 0} {
				tm := base.Add(sec + time.Duration(ns)).In(loc)
				got := string(appendRFC3339Nano([]byte("x"), &last, tm))
				if want := "x" + tm.Format(time.RFC3339Nano); got != want {
					t.Errorf("%v: got %s, want %s", tm, got, want)
				}
			}
		}
	}
}

// BenchmarkAccessRecord prices the formatting of one access record.
func BenchmarkAccessRecord(b *testing.B) {
	var last atomic.Pointer[recordSecond]
	buf := make([]byte, 0, 512)
	start := time.Now()
	peer := connect.Peer{Addr: "127.0.0.1:40000", Protocol: connect.ProtocolConnect}
	for b.Loop() {
		buf = appendAccessRecord(buf[:0], &last, time.Now(), "DEBUG", "/goms.v1.GoMsService/Get", peer, "0123456789abcdef", start, nil, 20, 40, 1, 1)
	}
}
