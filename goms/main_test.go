package goms_test

import (
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/reversTeam/go-ms/goms"
)

// TestMain fails the run when goroutines outlive the tests: every server,
// connection and client that a test starts must be gone by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(cleanupM{m})
}

// cleanupM removes what the tests built once m has run, before goleak
// looks for goroutines.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	defer removeServerBuild()
	return c.m.Run()
}

// TestNoGoroutinesWithoutServe checks that a server starts goroutines only
// in Serve: one that New made and that is dropped, one whose New failed
// after making listeners, and one closed after Listen leave none behind.
// The grpc engine used to start grpc-go's stream workers in New.
func TestNoGoroutinesWithoutServe(t *testing.T) {
	// Not parallel: goleak compares all the goroutines of the process.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	grpcListener := goms.Listener{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC}
	logger := slog.New(slog.DiscardHandler)
	if _, err := goms.New(goms.Config{Listeners: []goms.Listener{grpcListener}, Logger: logger}); err != nil {
		t.Fatalf("New: %v", err)
	}
	bad := goms.Config{Listeners: []goms.Listener{grpcListener, {Name: "bad", Addr: "nonsense"}}, Logger: logger}
	if _, err := goms.New(bad); err == nil {
		t.Fatal("New with a bad address: no error")
	}
	srv, err := goms.New(goms.Config{Listeners: []goms.Listener{grpcListener}, Logger: logger})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
