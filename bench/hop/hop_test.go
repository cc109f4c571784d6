// Package hop measures what one service-to-service call costs: a client
// and a server in one process, talking over loopback, with grpc-go at both
// ends, connect-go at both ends (net/http's HTTP/2 over h2c), and goms at
// both ends (Server.Client to a remote on grpc-go's client, served by a
// grpc-mode listener on the grpc engine).
package hop

import (
	"context"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
)

var item = &gomsv1.Item{Id: "0123456789abcdef", Name: "bench"}

type connectItems struct {
	gomsv1connect.UnimplementedGoMsServiceHandler
}

func (connectItems) Get(context.Context, *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	return connect.NewResponse(&gomsv1.GetResponse{Item: item}), nil
}

// grpcGet is grpc-go's handler of Get, as protoc-gen-go-grpc would write
// it: the messages are those of gen/ (grpc-go's proto codec takes any
// protobuf message).
func grpcGet(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var req gomsv1.GetRequest
	if err := dec(&req); err != nil {
		return nil, err
	}
	return &gomsv1.GetResponse{Item: item}, nil
}

var grpcDesc = grpc.ServiceDesc{
	ServiceName: gomsv1connect.GoMsServiceName,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Get", Handler: grpcGet}},
}

// BenchmarkHop runs Get calls from a client to a server of the same
// process over loopback, one or 50 in flight. cpu-ns/op is the process's
// CPU (user and system) per call: client and server together.
func BenchmarkHop(b *testing.B) {
	cases := []struct {
		name string
		get  func(b *testing.B) func(context.Context) error
	}{
		{"grpc-go", grpcGo},
		{"connect-go", connectGo},
		{"goms", gomsHop},
		{"goms-bare", gomsBareHop},
	}
	for _, inFlight := range []int{1, 50} {
		for _, c := range cases {
			b.Run(c.name+"/in-flight="+itoa(inFlight), func(b *testing.B) {
				get := c.get(b)
				ctx := b.Context()
				for range 100 { // connections up, pools warm
					if err := get(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := processCPU(b)
				if inFlight == 1 {
					for range b.N {
						if err := get(ctx); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					var wg sync.WaitGroup
					var mu sync.Mutex
					next := 0
					for range inFlight {
						wg.Go(func() {
							for {
								mu.Lock()
								if next >= b.N {
									mu.Unlock()
									return
								}
								next++
								mu.Unlock()
								if err := get(ctx); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
				}
				b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkHopSide prices each side of a goms hop against grpc-go's: a
// grpc-go client calling goms's grpc engine (the serving side), and goms's
// Server.Client calling a grpc-go server (the calling side). Compare each
// with BenchmarkHop's grpc-go case of the same run. The -bare cases turn
// off what goms's configuration can turn off (interceptors, the adaptive
// limit, the body rate, hedging) and leave connect's handler or client,
// the bridge, the remote's default deadline and retry policy: the floor
// of a hop that keeps connect code at both ends.
func BenchmarkHopSide(b *testing.B) {
	cases := []struct {
		name string
		get  func(b *testing.B) func(context.Context) error
	}{
		{"grpc-go", grpcGo},
		{"grpc-go-to-goms", grpcGoToGoms},
		{"goms-to-grpc-go", gomsToGRPCGo},
		{"grpc-go-to-goms-bare", grpcGoToGomsBare},
		{"goms-bare-to-grpc-go", gomsBareToGRPCGo},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			get := c.get(b)
			ctx := b.Context()
			for range 100 {
				if err := get(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := processCPU(b)
			for range b.N {
				if err := get(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

func grpcGo(b *testing.B) func(context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&grpcDesc, struct{}{})
	go func() { _ = gs.Serve(ln) }()
	b.Cleanup(gs.Stop)
	return grpcGoClient(b, ln.Addr().String())
}

// grpcGoClient calls Get on addr with grpc-go's client.
func grpcGoClient(b *testing.B, addr string) func(context.Context) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	return func(ctx context.Context) error {
		var res gomsv1.GetResponse
		return cc.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, &gomsv1.GetRequest{Id: item.Id}, &res)
	}
}

// grpcGoToGoms calls goms's grpc engine with grpc-go's client.
func grpcGoToGoms(b *testing.B) func(context.Context) error {
	return grpcGoClient(b, gomsBackend(b, false).Addr("grpc").String())
}

// grpcGoToGomsBare calls a bare goms backend with grpc-go's client.
func grpcGoToGomsBare(b *testing.B) func(context.Context) error {
	return grpcGoClient(b, gomsBackend(b, true).Addr("grpc").String())
}

// gomsToGRPCGo calls a grpc-go server through Server.Client.
func gomsToGRPCGo(b *testing.B) func(context.Context) error {
	return gomsCaller(b, grpcGoServer(b), false)
}

// gomsBareToGRPCGo calls a grpc-go server through a bare caller's
// Server.Client.
func gomsBareToGRPCGo(b *testing.B) func(context.Context) error {
	return gomsCaller(b, grpcGoServer(b), true)
}

// grpcGoServer starts a grpc-go server of Get and returns its address.
func grpcGoServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&grpcDesc, struct{}{})
	go func() { _ = gs.Serve(ln) }()
	b.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func connectGo(b *testing.B) func(context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gomsv1connect.NewGoMsServiceHandler(connectItems{}))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	b.Cleanup(func() { _ = hs.Close() })
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &h2c}}
	client := gomsv1connect.NewGoMsServiceClient(hc, "http://"+ln.Addr().String(), connect.WithGRPC())
	return func(ctx context.Context) error {
		_, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: item.Id}))
		return err
	}
}

// gomsHop starts a goms server with the service on a grpc-mode listener
// (the grpc engine) and a second goms server that reaches it as a remote,
// and calls it through the second's Server.Client, as services do.
func gomsHop(b *testing.B) func(context.Context) error {
	return gomsCaller(b, gomsBackend(b, false).Addr("grpc").String(), false)
}

// gomsBareHop is gomsHop with a bare caller and backend (see
// BenchmarkHopSide).
func gomsBareHop(b *testing.B) func(context.Context) error {
	return gomsCaller(b, gomsBackend(b, true).Addr("grpc").String(), true)
}

// gomsBackend starts a goms server with the service on a grpc-mode
// listener named grpc, served by the grpc engine; a bare one has no
// interceptors, adaptive limit or body rate.
func gomsBackend(b *testing.B, bare bool) *goms.Server {
	cfg := goms.Config{Listeners: []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC, Engine: goms.EngineGRPC}}}
	if bare {
		cfg.Listeners[0].AdaptiveLimit.Disabled = true
		cfg.Listeners[0].MinBodyRate = -1
		cfg.Interceptors.Default = []string{}
	}
	return serve(b, cfg, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(connectItems{}, srv.HandlerOptions()...))
	})
}

// gomsCaller starts a goms server that reaches the service at addr as a
// remote, and returns a call of Get through its Server.Client, as services
// make them; a bare caller has no interceptors and does not hedge Get.
func gomsCaller(b *testing.B, addr string, bare bool) func(context.Context) error {
	cfg := goms.Config{
		Listeners: []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC}},
		Remotes: []goms.Remote{{Name: "items", Service: gomsv1connect.GoMsServiceName,
			Targets: []string{addr}}},
	}
	if bare {
		cfg.Interceptors.Default = []string{}
		cfg.Remotes[0].Methods = []goms.RemoteMethod{{Name: "Get", NoHedge: true}}
	}
	caller := serve(b, cfg, func(*goms.Server) error { return nil })
	hc, url := caller.Client(gomsv1connect.GoMsServiceName)
	client := gomsv1connect.NewGoMsServiceClient(hc, url, caller.ClientOptions()...)
	return func(ctx context.Context) error {
		_, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: item.Id}))
		return err
	}
}

// serve starts a goms server with no access log and stops it at cleanup.
func serve(b *testing.B, cfg goms.Config, mount func(*goms.Server) error) *goms.Server {
	cfg.Log.Level = 100 // quiet
	srv, err := goms.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := mount(srv); err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return srv
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func itoa(n int) string {
	if n == 1 {
		return "1"
	}
	return "50"
}
