package goms

import (
	"encoding/json"
	"testing"
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
