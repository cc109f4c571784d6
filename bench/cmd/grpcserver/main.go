// Command grpcserver serves goms.v1.GoMsService for the load benchmark
// with the reference stacks goms is compared against (-kind):
//
//   - grpcgo: a grpc-go server with its defaults;
//   - gateway: grpc-gateway's runtime.ServeMux on HTTP/1.1, in front of a
//     grpc-go server in the same process, reached over a loopback gRPC
//     connection as grpc-gateway is usually deployed.
//
// Both serve Get from an in-memory map that does the work gomsservice
// does per call (a read-locked lookup, then a new Item with two
// timestamps). It links the messages generated into bench/gen, so it cannot
// link gomsservice, which uses gen/goms/v1: the two would register the
// same proto file.
//
// It listens on free ports of -host, then prints an admin.Hello line on
// stdout and serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	gomsv1 "github.com/reversTeam/go-ms/bench/gen/goms/v1"
	"github.com/reversTeam/go-ms/bench/internal/admin"
)

func main() {
	kind := flag.String("kind", "", "server setup: grpcgo or gateway")
	host := flag.String("host", "127.0.0.1", "host of the listeners (ports are chosen free)")
	adminAddr := flag.String("admin", "127.0.0.1:0", "address of the admin (stats) endpoint")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	stopProfile, err := admin.Profile(*cpuProfile)
	if err == nil {
		err = run(*kind, *host, *adminAddr)
		err = errors.Join(err, stopProfile())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcserver:", err)
		os.Exit(1)
	}
}

func run(kind, host, adminAddr string) error {
	if kind != "grpcgo" && kind != "gateway" {
		return fmt.Errorf("-kind %q: want grpcgo or gateway", kind)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	items := newItemServer()
	ids := make(map[string]string)
	for payload, name := range admin.ItemNames() {
		ids[payload] = items.create(name)
	}
	adminBound, err := admin.Serve(adminAddr)
	if err != nil {
		return err
	}
	hello := admin.Hello{Admin: adminBound, IDs: ids}

	gs := grpc.NewServer()
	gomsv1.RegisterGoMsServiceServer(gs, items)
	grpcLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLn) }()
	defer gs.Stop()

	if kind == "grpcgo" {
		hello.Addrs = map[string]string{admin.EndpointGRPC: grpcLn.Addr().String()}
		if err := admin.Announce(hello); err != nil {
			return err
		}
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			gs.GracefulStop()
			return nil
		}
	}

	conn, err := grpc.NewClient(grpcLn.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	mux := runtime.NewServeMux()
	if err := gomsv1.RegisterGoMsServiceHandler(ctx, mux, conn); err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	httpLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	go func() { errc <- hs.Serve(httpLn) }()
	hello.Addrs = map[string]string{admin.EndpointHTTP: httpLn.Addr().String()}
	if err := admin.Announce(hello); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	gs.GracefulStop()
	return nil
}

// record is the stored form of an item, as in gomsservice.
type record struct {
	id, name         string
	created, updated time.Time
}

// itemServer answers Get from a map; Create is for seeding only.
type itemServer struct {
	gomsv1.UnimplementedGoMsServiceServer

	mu   sync.RWMutex
	byID map[string]record
}

func newItemServer() *itemServer {
	return &itemServer{byID: make(map[string]record)}
}

// create stores an item under an id of the form gomsservice assigns:
// 16 random hexadecimal digits.
func (s *itemServer) create(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		if _, taken := s.byID[id]; taken {
			continue
		}
		now := time.Now()
		s.byID[id] = record{id: id, name: name, created: now, updated: now}
		return id
	}
}

func (s *itemServer) Get(_ context.Context, req *gomsv1.GetRequest) (*gomsv1.GetResponse, error) {
	s.mu.RLock()
	r, ok := s.byID[req.GetId()]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no item has id %q", req.GetId())
	}
	return &gomsv1.GetResponse{Item: &gomsv1.Item{
		Id:         r.id,
		Name:       r.name,
		CreateTime: timestamppb.New(r.created),
		UpdateTime: timestamppb.New(r.updated),
	}}, nil
}
