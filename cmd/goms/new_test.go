package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// goCommand runs a command in dir, failing the test with its output when it
// fails, and logs how long it took.
func runIn(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s: %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return string(out)
}

// goms new writes a project that passes its own tests and checks, whose
// program serves HTTP/1.1 JSON, gRPC with reflection and REST, and stops
// cleanly on SIGTERM.
func TestNewProject(t *testing.T) {
	if testing.Short() {
		t.Skip("builds buf and a generated project (about a minute with a warm cache)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	goms := filepath.Join(tmp, "goms")
	runIn(t, ".", "go", "build", "-o", goms, ".")
	start := time.Now()
	runIn(t, tmp, goms, "new", "-replace", root, "example.com/shop")
	dir := filepath.Join(tmp, "shop")
	runIn(t, dir, "make", "test")
	t.Logf("from goms new to a passing make test: %v", time.Since(start).Round(time.Millisecond))
	runIn(t, dir, "make", "checkgenerate", "lint")

	runIn(t, dir, "go", "build", "-o", "bin/shop", ".")
	cmd := exec.Command("bin/shop", "-set", "listeners.public.address=127.0.0.1:0", "-set", "admin.address=127.0.0.1:0")
	cmd.Dir = dir
	// The program reads GOMS_* variables as configuration: none of ours.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMS_") })
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addrs := make(chan map[string]string, 1)
	var logs bytes.Buffer
	go func() {
		listening := regexp.MustCompile(`goms: listening.* listener=(\w+) addr=(\S+)`)
		found := make(map[string]string)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found[m[1]] = m[2]
				if len(found) == 2 {
					addrs <- found
				}
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var listeners map[string]string
	select {
	case listeners = <-addrs:
	case err := <-exited:
		t.Fatalf("the program exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the program did not listen within 30s:\n%s", logs.String())
	}
	base := "http://" + listeners["public"]

	// HTTP/1.1 JSON, as curl sends it.
	res, err := http.Post(base+"/shop.v1.ShopService/Create", "application/json", strings.NewReader(`{"name":"first"}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Item struct{ ID, Name string } }
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if err := json.Unmarshal(body, &created); err != nil || res.StatusCode != 200 || res.ProtoMajor != 1 || created.Item.Name != "first" {
		t.Fatalf("Create over HTTP/1.1 JSON: %s %s, %v", res.Status, body, err)
	}

	// gRPC, with the schema from server reflection.
	if got := callThroughReflection(t, base, "shop.v1.ShopService", "Get", `{"id":"`+created.Item.ID+`"}`); !strings.Contains(got, `"first"`) {
		t.Fatalf("Get over gRPC = %s", got)
	}

	// REST routes, the OpenAPI document, and health on the admin listener.
	for url, want := range map[string]string{
		base + "/v1/items/" + created.Item.ID:       `"name":"first"`,
		base + "/v1/items":                          created.Item.ID,
		base + "/openapi.json":                      `"openapi":"3.1.0"`,
		"http://" + listeners["admin"] + "/readyz":  "ready",
		"http://" + listeners["admin"] + "/metrics": "goms_server_requests_total",
	} {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(strings.ReplaceAll(string(body), " ", ""), want) {
			t.Errorf("GET %s: %s %.300s; want %s", url, res.Status, body, want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the program did not stop within 20s of SIGTERM:\n%s", logs.String())
	}
}

// callThroughReflection calls service/method over gRPC with a JSON
// request, knowing the schema only from the server's reflection, and
// returns the JSON response.
func callThroughReflection(t *testing.T, base, service, method, request string) string {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	defer h2c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := grpcreflect.NewClient(h2c, base, connect.WithGRPC()).NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if !slices.Contains(names, protoreflect.FullName(service)) {
		t.Fatalf("reflection lists %v, not %s", names, service)
	}
	fds, err := stream.FileContainingSymbol(protoreflect.FullName(service))
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	files, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: fds})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := files.FindDescriptorByName(protoreflect.FullName(service + "." + method))
	if err != nil {
		t.Fatal(err)
	}
	md := desc.(protoreflect.MethodDescriptor)
	client := connect.NewClient[dynamicpb.Message, dynamicpb.Message](h2c, base+"/"+service+"/"+method,
		connect.WithGRPC(), connect.WithSchema(md),
		connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(md.Output())
			return nil
		}))
	req := dynamicpb.NewMessage(md.Input())
	if err := protojson.Unmarshal([]byte(request), req); err != nil {
		t.Fatal(err)
	}
	res, err := client.CallUnary(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("%s/%s over gRPC: %v", service, method, err)
	}
	out, err := protojson.Marshal(res.Msg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// goms new refuses what it cannot make a project of, saying what to
// change.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll("taken", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("taken/x", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		module, service, want string
	}{
		{"example.com/taken", "", "directory taken exists and is not empty"},
		{"Example .com/x", "", `module path "Example .com/x": `},
		{"example.com/x//y", "", "a module path looks like example.com/shop"},
		{"example.com/shop", "shop.ShopService", `want "package.vN.NameService"`},
		{"example.com/shop", "shop.v1.Shop", `ending in "Service"`},
		{"example.com/shop", "Shop.v1.ShopService", "a lower-case package"},
		{"example.com/123", "", "name it with -service"},
	} {
		var stderr bytes.Buffer
		err := run([]string{"new", "-replace", filepath.Join(t.TempDir(), "nogoms"), "-service", tc.service, tc.module}, io.Discard, &stderr)
		if tc.service == "" {
			err = run([]string{"new", tc.module}, io.Discard, &stderr)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("new %s -service %q: %v; want %q", tc.module, tc.service, err, tc.want)
		}
	}
	// -replace must name a goms checkout.
	err := run([]string{"new", "-replace", t.TempDir(), "example.com/fine"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a goms checkout") {
		t.Errorf("-replace of an empty directory: %v", err)
	}
	if _, err := os.Stat("fine"); err == nil {
		t.Error("a refused project left its directory")
	}
}

func TestProjectNames(t *testing.T) {
	p, err := newProject("github.com/acme/order-desk/v2", "acme.orders.v1beta1.OrderDeskService", "")
	if err == nil {
		t.Fatalf("no error without a version or -replace: %+v", p)
	}
	root, _ := filepath.Abs("../..")
	p, err = newProject("github.com/acme/order-desk/v2", "acme.orders.v1beta1.OrderDeskService", root)
	if err != nil {
		t.Fatal(err)
	}
	want := project{
		Module: "github.com/acme/order-desk/v2", Dir: "order-desk", Name: "order-desk",
		ProtoPackage: "acme.orders.v1beta1", ProtoDir: "acme/orders/v1beta1", ProtoFile: "order_desk",
		Service: "OrderDeskService", GoPackage: "ordersv1beta1",
		GenImport:     "github.com/acme/order-desk/v2/gen/acme/orders/v1beta1",
		ConnectImport: "github.com/acme/order-desk/v2/gen/acme/orders/v1beta1/ordersv1beta1connect",
		GomsVersion:   unknownVersion, Replace: root,
	}
	if *p != want {
		t.Errorf("got  %+v\nwant %+v", *p, want)
	}
}
