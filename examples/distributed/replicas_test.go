package main_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// TestReplicasSIGKILL balances an edge's calls over two replica processes
// of the goms service, kills one with SIGKILL under load, and restarts it:
// no call that never reached a replica fails, the load goes on, and the
// restarted replica gets traffic again. List is stateless enough for
// replicas with their own stores.
func TestReplicasSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "distributed")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	a, b, edgeAddr := freePort(t), freePort(t), freePort(t)
	replicaA := start(t, bin, "goms.yaml", a, "listeners.gateway.address="+a)
	start(t, bin, "goms.yaml", b, "listeners.gateway.address="+b)
	start(t, bin, "edge.yaml", edgeAddr, "listeners.edge.address="+edgeAddr,
		fmt.Sprintf("remotes.goms.targets=[%q, %q]", a, b), fmt.Sprintf("remotes.child.targets=[%q]", freePort(t)))

	client := gomsv1connect.NewGoMsServiceClient(http.DefaultClient, "http://"+edgeAddr, connect.WithProtoJSON())
	// Each replica tags what it serves: an item named after it.
	for _, addr := range []string{a, b} {
		direct := gomsv1connect.NewGoMsServiceClient(http.DefaultClient, "http://"+addr, connect.WithProtoJSON())
		if _, err := direct.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "replica-" + addr})); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	served := map[string]int{}
	var sent, neverDelivered, cut atomic.Int64
	call := func() {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		sent.Add(1)
		res, err := client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{}))
		switch {
		case err == nil && len(res.Msg.GetItems()) > 0:
			mu.Lock()
			served[res.Msg.GetItems()[0].GetName()]++
			mu.Unlock()
		case connect.CodeOf(err) == connect.CodeUnavailable:
			neverDelivered.Add(1)
			t.Errorf("a call failed with unavailable: %v", err)
		case err != nil:
			cut.Add(1)
			t.Logf("a call cut in flight: %v", err)
		}
	}
	load := func(d time.Duration) {
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for range 4 {
			wg.Go(func() {
				for i := 0; i < 100000 && time.Now().Before(end); i++ {
					call()
				}
			})
		}
		wg.Wait()
	}
	snapshot := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range served {
			out[k] = v
		}
		return out
	}

	load(time.Second)
	before := snapshot()
	if before["replica-"+a] == 0 || before["replica-"+b] == 0 {
		t.Fatalf("calls did not spread across both replicas: %v", before)
	}
	done := make(chan struct{})
	go func() { load(2 * time.Second); close(done) }()
	time.Sleep(300 * time.Millisecond)
	replicaA.kill() // SIGKILL
	<-done
	afterKill := snapshot()
	if afterKill["replica-"+b] <= before["replica-"+b] {
		t.Errorf("replica b got no calls after a was killed: %v", afterKill)
	}

	replicaA2 := start(t, bin, "goms.yaml", a, "listeners.gateway.address="+a)
	_ = replicaA2
	direct := gomsv1connect.NewGoMsServiceClient(http.DefaultClient, "http://"+a, connect.WithProtoJSON())
	if _, err := direct.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: "replica-" + a + "-again"})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for snapshot()["replica-"+a+"-again"] == 0 && time.Now().Before(deadline) {
		load(200 * time.Millisecond)
	}
	final := snapshot()
	t.Logf("calls sent %d; served %v; never-delivered failures %d, cut in flight %d", sent.Load(), final, neverDelivered.Load(), cut.Load())
	if final["replica-"+a+"-again"] == 0 {
		t.Errorf("the restarted replica got no calls in 15s")
	}
	if cut.Load() > 4 {
		t.Errorf("%d calls cut: more than the 4 that can be in flight", cut.Load())
	}
}
