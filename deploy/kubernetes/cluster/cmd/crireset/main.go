// Command crireset stops and removes every pod sandbox of a CRI runtime
// (their containers with them), so that the runtime releases each pod's
// network (CNI DEL), network namespace and mounts before it is stopped.
//
//	crireset -endpoint unix:///path/to/containerd.sock -timeout 60s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "the runtime's CRI socket, unix:///PATH (required)")
	timeout := flag.Duration("timeout", time.Minute, "the time allowed for all of it")
	flag.Parse()
	if err := run(*endpoint, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "crireset:", err)
		os.Exit(1)
	}
}

func run(endpoint string, timeout time.Duration) error {
	if endpoint == "" {
		return fmt.Errorf("-endpoint is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var failed error
	for _, pod := range pods.Items {
		// Stop tears down the pod's network and kills its containers;
		// Remove deletes them, the sandbox and its network namespace.
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			failed = fmt.Errorf("stop pod %s/%s: %w", pod.Metadata.GetNamespace(), pod.Metadata.GetName(), err)
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			failed = fmt.Errorf("remove pod %s/%s: %w", pod.Metadata.GetNamespace(), pod.Metadata.GetName(), err)
		}
	}
	fmt.Printf("crireset: %d pod sandboxes removed\n", len(pods.Items))
	return failed
}
