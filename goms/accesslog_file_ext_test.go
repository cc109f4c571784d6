package goms_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
)

// accessFileRun serves the test services with the access log in a file
// of bufSize bytes of buffer, makes calls calls of Get (for ids that do not
// exist, so that each record has an error with quotes in it), from 8
// goroutines, stops the server, and returns the file's records and the
// server's own log.
func accessFileRun(t *testing.T, bufSize, calls int) (records []map[string]any, serverLog string) {
	path := filepath.Join(t.TempDir(), "access.log")
	var logBuf syncBuffer
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Log:       goms.Log{AccessFile: path, AccessBuffer: bufSize},
		Logger:    slog.New(slog.NewJSONHandler(&logBuf, nil)),
	}, nil)
	client := gomsv1connect.NewGoMsServiceClient(gomstest.H2C(t), run.URL("gateway"))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < calls; i += 8 {
				_, err := client.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: `"quoted"\id`}))
				if connect.CodeOf(err) != connect.CodeInvalidArgument && connect.CodeOf(err) != connect.CodeNotFound {
					t.Errorf("Get: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	run.Stop()
	if err := run.Wait(t); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("record %q: %v", sc.Text(), err)
		}
		records = append(records, rec)
	}
	return records, logBuf.String()
}

// TestAccessFile checks that every call's record reaches the file, as
// valid JSON with the fields of the logger's records, once the server
// has stopped.
func TestAccessFile(t *testing.T) {
	t.Parallel()
	const calls = 500
	records, _ := accessFileRun(t, 0, calls)
	if len(records) != calls {
		t.Fatalf("%d records; want %d", len(records), calls)
	}
	rec := records[0]
	for _, key := range []string{"time", "level", "msg", "procedure", "protocol", "code", "duration", "request_bytes", "response_bytes", "peer", "request_id", "error"} {
		if _, ok := rec[key]; !ok {
			t.Errorf("record %v lacks %q", rec, key)
		}
	}
	if rec["procedure"] != gomsv1connect.GoMsServiceGetProcedure || rec["msg"] != "goms: call" {
		t.Errorf("record %v", rec)
	}
}

// TestAccessFileDrops fills a tiny buffer faster than it is written out:
// the records that did not fit are counted in the server's log, and with
// those in the file they make every call.
func TestAccessFileDrops(t *testing.T) {
	t.Parallel()
	const calls = 2000
	records, serverLog := accessFileRun(t, 2048, calls)
	dropped := 0
	for line := range strings.Lines(serverLog) {
		var rec struct {
			Msg     string
			Dropped int
		}
		if err := json.Unmarshal([]byte(line), &rec); err == nil && strings.Contains(rec.Msg, "dropped records") {
			dropped += rec.Dropped
		}
	}
	t.Logf("%d records written, %d dropped", len(records), dropped)
	if dropped == 0 || len(records)+dropped != calls {
		t.Errorf("%d records written and %d reported dropped; want some dropped and %d in all", len(records), dropped, calls)
	}
}
