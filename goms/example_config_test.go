package goms_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/internal/testservice"
)

func ExampleLoadConfig() {
	// The program's own defaults, then a file (none here), then the
	// process's GOMS_* variables, then -set flags: each layer overrides the
	// ones before.
	defaults := []byte(`
listeners:
  - name: grpc
    address: 127.0.0.1:42001
    mode: grpc
  - name: http
    address: 127.0.0.1:8080
    mode: http
`)
	os.Setenv("GOMS_SHUTDOWN_TIMEOUT", "30s")
	defer os.Unsetenv("GOMS_SHUTDOWN_TIMEOUT")
	cfg, err := goms.LoadConfig(defaults, "", "listeners.http.address=127.0.0.1:9090")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, l := range cfg.Listeners {
		fmt.Println(l.Name, l.Addr, l.Mode)
	}
	fmt.Println(cfg.ShutdownTimeout)

	// A mistake names the key and where it came from.
	_, err = goms.LoadConfig(defaults, "", "listeners.http.adress=:1")
	fmt.Println(err != nil)
	// Output:
	// grpc 127.0.0.1:42001 grpc
	// http 127.0.0.1:9090 http
	// 30s
	// true
}

func ExampleAuth() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP}},
		Auth: goms.Auth{
			// Reads are public; everything else needs a known API key.
			Policies: map[string]string{
				"goms.v1.GoMsService/Get":  "public",
				"goms.v1.GoMsService/List": "public",
			},
			Verifier: func(_ context.Context, c goms.Credentials) (goms.Identity, error) {
				if c.APIKey == "s3cret" {
					return goms.Identity{Subject: "ci-robot"}, nil
				}
				return goms.Identity{}, errors.New("unknown key")
			},
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)); err != nil {
		fmt.Println(err)
		return
	}
	stop, err := startExample(srv)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	client := gomsv1connect.NewGoMsServiceClient(&http.Client{}, "http://"+srv.Addr("http").String())
	_, err = client.List(context.Background(), connect.NewRequest(&gomsv1.ListRequest{}))
	fmt.Println("list:", outcome(err))
	_, err = client.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "x"}))
	fmt.Println("create without a key:", outcome(err))
	req := connect.NewRequest(&gomsv1.CreateRequest{Name: "x"})
	req.Header().Set("X-Api-Key", "s3cret")
	_, err = client.Create(context.Background(), req)
	fmt.Println("create with the key:", err == nil)
	// Output:
	// list: ok
	// create without a key: unauthenticated
	// create with the key: true
}

func ExampleMethodConfig() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP}},
		Interceptors: goms.Interceptors{Rules: map[string]goms.MethodConfig{
			// A service's rule applies to its methods.
			"goms.v1.GoMsService": {Remove: []string{"accesslog"}},
			// A method's rule wins over its service's: one Create a
			// minute, for every caller together.
			"goms.v1.GoMsService/Create": {RateLimit: goms.RateLimit{Rate: 1.0 / 60, Burst: 1}},
		}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)); err != nil {
		fmt.Println(err)
		return
	}
	stop, err := startExample(srv)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	client := gomsv1connect.NewGoMsServiceClient(&http.Client{}, "http://"+srv.Addr("http").String())
	for range 2 {
		_, err = client.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "x"}))
		fmt.Println(outcome(err))
	}
	// Output:
	// ok
	// resource_exhausted
}

func ExampleRemote() {
	// A process that serves GoMsService on a gRPC listener...
	backend, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC}},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := backend.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), backend.HandlerOptions()...)); err != nil {
		fmt.Println(err)
		return
	}
	stopBackend, err := startExample(backend)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stopBackend()

	// ...and one that does not mount it, but knows where it runs: its
	// Client reaches it over the network, with the same generated client
	// as for a service of its own.
	caller, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP}},
		Remotes: []goms.Remote{{
			Name:    "goms",
			Service: gomsv1connect.GoMsServiceName,
			Targets: []string{backend.Addr("grpc").String()},
		}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	stopCaller, err := startExample(caller)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stopCaller()

	httpClient, url := caller.Client(gomsv1connect.GoMsServiceName)
	items := gomsv1connect.NewGoMsServiceClient(httpClient, url)
	res, err := items.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "remote"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Msg.GetItem().GetName())
	fmt.Println(caller.Remotes()[0].Calls)
	// Output:
	// remote
	// 1
}

// outcome is "ok" for a call that succeeded, else its code.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}
