package goms_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// ExampleListener_rest serves the google.api.http routes of goms.v1
// ("POST /goms", "GET /goms/{id}" …) next to its RPC procedures.
func ExampleListener_rest() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP, REST: true}},
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
	base := "http://" + srv.Addr("http").String()

	res, err := http.Post(base+"/goms", "application/json", strings.NewReader(`{"name":"first"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = res.Body.Close()
	fmt.Println("POST /goms:", res.Status)

	res, err = http.Get(base + "/goms/0123456789abcdef")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	fmt.Println("GET /goms/0123456789abcdef:", res.Status, strings.ReplaceAll(string(body), " ", ""))
	// Output:
	// POST /goms: 200 OK
	// GET /goms/0123456789abcdef: 404 Not Found {"code":5,"message":"item\"0123456789abcdef\"notfound","details":[]}
}

// ExampleCORS lets pages of one other origin call a listener from a
// browser: a preflight from that origin is allowed, one from elsewhere
// gets no CORS headers.
func ExampleCORS() {
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{
			Name: "http", Addr: "127.0.0.1:0", Mode: goms.ModeHTTP,
			CORS: goms.CORS{AllowedOrigins: []string{"https://app.example.com"}},
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
	url := "http://" + srv.Addr("http").String() + "/goms.v1.GoMsService/List"

	for _, origin := range []string{"https://app.example.com", "https://elsewhere.example.com"} {
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		_ = res.Body.Close()
		fmt.Printf("%s: %d, Access-Control-Allow-Origin %q\n", origin, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	// Output:
	// https://app.example.com: 204, Access-Control-Allow-Origin "https://app.example.com"
	// https://elsewhere.example.com: 204, Access-Control-Allow-Origin ""
}
