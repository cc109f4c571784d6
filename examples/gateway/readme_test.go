package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlocks returns the shell blocks of the README that call a running
// gateway example: those that start no program themselves (make, go run)
// and do not call another example.
func readmeBlocks(t *testing.T, readme string) []string {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	starts := regexp.MustCompile(`(?m)^(make |go run )|run-distributed|cmd/goms@`)
	var blocks []string
	for _, part := range strings.Split(string(data), "```sh\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("unterminated shell block:\n%s", part)
		}
		if !starts.MatchString(block) {
			blocks = append(blocks, block)
		}
	}
	return blocks
}

// Every shell block of the README runs, in order, against one freshly
// started gateway example with the README's token, with no call
// tripping over the state an earlier block left.
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("runs grpcurl and buf curl through go tool")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README's blocks need curl: apt-get install curl")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 4 {
		t.Fatalf("found %d shell blocks to run, want the Try it, REST, OpenAPI and observability ones", len(blocks))
	}
	ts := startExample(t)
	addrs := strings.NewReplacer(
		"127.0.0.1:8080", ts.Addr("http"),
		"127.0.0.1:42001", ts.Addr("grpc"),
		"127.0.0.1:4242", ts.Addr("admin"),
	)
	var all strings.Builder
	for i, block := range blocks {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", addrs.Replace(block))
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("block %d failed: %v\n%s\noutput:\n%s", i+1, err, block, out)
		}
		all.Write(out)
		t.Logf("block %d:\n%s", i+1, out)
	}
	got := all.String()
	for _, bad := range []string{"already_exists", `"code":6`} {
		if strings.Contains(got, bad) {
			t.Errorf("a call answered %s:\n%s", bad, got)
		}
	}
	for _, want := range []string{
		`"name":"first"`, `"name": "c"`, "goms.v1.GoMsService", // Try it
		`"name":"over rest"`, `"name":"renamed"`, `"name":"kid2"`, "404 Not Found", // REST
		`"openapi": "3.1.0"`, `"operationId": "goms.v1.GoMsService.Create.rest"`, "200 text/html", // OpenAPI
		"X-Request-Id: abc", "goms_server_requests_total", `"code":"unauthenticated"`, // observability
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the blocks' output lacks %s:\n%s", want, got)
		}
	}
}
