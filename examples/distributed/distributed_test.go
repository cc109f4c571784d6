package main_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// freePort returns a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is one running instance of the example binary.
type process struct {
	cmd  *exec.Cmd
	addr string
}

func start(t *testing.T, bin, config, addr string, set ...string) *process {
	t.Helper()
	args := []string{"-config", config, "-set", "admin.address=127.0.0.1:0"}
	for _, s := range set {
		args = append(args, "-set", s)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, addr: addr}
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s not ready after 20s: %v", config, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *process) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// TestThreeProcesses runs the goms service, the child service and an edge
// as three processes of the same binary, configured by the YAML files of
// this directory, and calls them through the edge.
func TestThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "distributed")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	gomsAddr, childAddr, edgeAddr := freePort(t), freePort(t), freePort(t)
	gomsProc := start(t, bin, "goms.yaml", gomsAddr, "listeners.gateway.address="+gomsAddr)
	start(t, bin, "child.yaml", childAddr, "listeners.gateway.address="+childAddr, fmt.Sprintf("remotes.goms.targets=[%q]", gomsAddr))
	start(t, bin, "edge.yaml", edgeAddr, "listeners.edge.address="+edgeAddr,
		fmt.Sprintf("remotes.goms.targets=[%q]", gomsAddr), fmt.Sprintf("remotes.child.targets=[%q]", childAddr))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	parents := gomsv1connect.NewGoMsServiceClient(http.DefaultClient, "http://"+edgeAddr, connect.WithProtoJSON())
	children := childv1connect.NewChildServiceClient(http.DefaultClient, "http://"+edgeAddr, connect.WithProtoJSON())

	parent, err := parents.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "parent"}))
	if err != nil {
		t.Fatalf("create a parent through the edge: %v", err)
	}
	parentID := parent.Msg.GetItem().GetId()
	child, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: parentID, Name: "child"}))
	if err != nil || child.Msg.GetItem().GetParentId() != parentID {
		t.Fatalf("create a child through the edge: %v, %v", child, err)
	}
	_, err = children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: "0000000000000000", Name: "orphan"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("a missing parent: %v, want failed_precondition", err)
	}

	// The goms process dies: the child process's calls to it fail fast
	// with unavailable, without waiting for a deadline.
	gomsProc.kill()
	for i := range 3 {
		start := time.Now()
		_, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: parentID, Name: fmt.Sprintf("while-down-%d", i)}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("child create while goms is down: %v, want unavailable", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("unavailable after %v; it must come at once", d)
		}
	}

	// goms comes back on the same address (with an empty store): the child
	// process reconnects without a restart.
	// The edge dials it again within its reconnection backoff (1s at most).
	start(t, bin, "goms.yaml", gomsAddr, "listeners.gateway.address="+gomsAddr)
	for reconnect := time.Now().Add(5 * time.Second); ; {
		parent, err = parents.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "parent-again"}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(reconnect) {
			t.Fatalf("create a parent after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: parent.Msg.GetItem().GetId(), Name: "after-restart"}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			t.Fatalf("child create after goms restarted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
