package goms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// postJSON sends a Connect JSON request with net/http, as curl would.
func postJSON(client *http.Client, url, body string) (status string, response string, err error) {
	res, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	return res.Status, string(data), err
}

func ExampleNew() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{
			// Port 0 picks a free port; Addr tells which after Listen.
			{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP},
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

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	url := "http://" + srv.Addr("http").String() + gomsv1connect.GoMsServiceCreateProcedure
	status, body, err := postJSON(client, url, `{"name": "first"}`)
	if err != nil {
		fmt.Println(err)
		return
	}
	var res struct {
		Item struct {
			Name string `json:"name"`
		} `json:"item"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(status, res.Item.Name)
	fmt.Println("Serve:", stop())
	// Output:
	// 200 OK first
	// Serve: <nil>
}

func ExampleServer_Mount() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// An RPC service, from its generated constructor...
	if err := srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...)); err != nil {
		fmt.Println(err)
		return
	}
	// ...and a plain HTTP route.
	if err := srv.Mount("/version", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "v1.2.3")
	})); err != nil {
		fmt.Println(err)
		return
	}
	stop, err := startExample(srv)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + srv.Addr("gateway").String()
	status, body, err := postJSON(client, base+gomsv1connect.GoMsServiceGetProcedure, `{"id": "0123456789abcdef"}`)
	if err != nil {
		fmt.Println(err)
		return
	}
	var rpcErr struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(body), &rpcErr); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(status, rpcErr.Code)
	res, err := client.Get(base + "/version")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	version, _ := io.ReadAll(res.Body)
	fmt.Print(res.Status, " ", string(version))
	// Output:
	// 404 Not Found not_found
	// 200 OK v1.2.3
}

// A listener answers the protocols its mode excludes with an error in the
// caller's own protocol that names the listener and its mode.
func ExampleMode() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC}},
		Logger:    slog.New(slog.DiscardHandler),
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

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	url := "http://" + srv.Addr("grpc").String() + gomsv1connect.GoMsServiceCreateProcedure
	status, body, err := postJSON(client, url, `{"name": "first"}`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(status)
	fmt.Println(body)

	// A connect-go client sees the same error, here over HTTP/1.1.
	items := gomsv1connect.NewGoMsServiceClient(client, "http://"+srv.Addr("grpc").String(), connect.WithGRPCWeb())
	_, err = items.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "first"}))
	fmt.Println(connect.CodeOf(err))
	fmt.Println(err)
	// Output:
	// 501 Not Implemented
	// {"code":"unimplemented","message":"listener \"grpc\" (mode grpc) does not accept Connect requests: it serves gRPC only"}
	// unimplemented
	// unimplemented: listener "grpc" (mode grpc) does not accept gRPC-Web requests: it serves gRPC only
}

func ExampleServer_SetHealth() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	stop, err := startExample(srv)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	readyz := "http://" + srv.Addr("gateway").String() + "/readyz"
	probe := func() {
		res, err := client.Get(readyz)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		fmt.Print(res.Status, " ", string(body))
	}
	probe()
	// For instance while a dependency is down: the load balancer stops
	// sending traffic, the process keeps running.
	srv.SetHealth("", grpchealth.StatusNotServing)
	probe()
	srv.SetHealth("", grpchealth.StatusServing)
	probe()
	// Output:
	// 200 OK ready
	// 503 Service Unavailable not ready
	// 200 OK ready
}

func ExampleServer_Client() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC}},
		Logger:    slog.New(slog.DiscardHandler),
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

	// Another service of the same process calls GoMsService this way.
	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
	items := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	res, err := items.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "first"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Msg.GetItem().GetName())

	httpClient, baseURL = srv.Client("other.v1.OtherService")
	other := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
	_, err = other.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "first"}))
	fmt.Println(connect.CodeOf(err))
	// Output:
	// first
	// unavailable
}
