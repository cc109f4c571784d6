package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/reversTeam/go-ms/bench/internal/admin"
	"github.com/reversTeam/go-ms/bench/internal/load"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// idleTarget is one measurement of idle memory: a fresh server process and
// the kind of request each idle connection makes once.
type idleTarget struct {
	label    string
	listener string
	// start runs the server and returns it with the address and item id
	// the connections use.
	start func(ctx context.Context) (p *process, addr, id string, err error)
	// grpc selects a gRPC request; otherwise a Connect binary one.
	grpc bool
}

// idleResult is what one idleTarget measured.
type idleResult struct {
	target  idleTarget
	idle    int64 // RSS once started and settled
	loaded  int64 // RSS with the connections open and settled
	conns   int
	perConn int64
}

func idleTargets(bins binaries, cpus []int) []idleTarget {
	gatewayExample := func(listener string) func(context.Context) (*process, string, string, error) {
		return func(ctx context.Context) (*process, string, string, error) {
			grpcPort, err := freePort()
			if err != nil {
				return nil, "", "", err
			}
			httpPort, err := freePort()
			if err != nil {
				return nil, "", "", err
			}
			p, err := newProcess("examples/gateway", bins.path("gateway"),
				[]string{"-grpc-port", strconv.Itoa(grpcPort), "-http-port", strconv.Itoa(httpPort)}, cpus, bins.logDir)
			if err != nil {
				return nil, "", "", err
			}
			if err := p.start(cpus); err != nil {
				return nil, "", "", err
			}
			httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
			if err := waitReady(ctx, p, "http://"+httpAddr+"/readyz"); err != nil {
				_ = p.stop()
				return nil, "", "", err
			}
			addr := httpAddr
			if listener == "grpc" {
				addr = "127.0.0.1:" + strconv.Itoa(grpcPort)
			}
			return p, addr, "0123456789abcdef", nil // no such item: not found
		}
	}
	benchServer := func(k Kind) func(context.Context) (*process, string, string, error) {
		return func(ctx context.Context) (*process, string, string, error) {
			s, err := startServer(ctx, bins, k, cpus, "")
			if err != nil {
				return nil, "", "", err
			}
			return s.process, s.hello.Addrs[admin.EndpointGRPC], s.hello.IDs[admin.PayloadSmall], nil
		}
	}
	return []idleTarget{
		{label: "goms, examples/gateway", listener: "http (Connect proto, h2c)", start: gatewayExample("http")},
		{label: "goms, examples/gateway", listener: "grpc (gRPC)", start: gatewayExample("grpc"), grpc: true},
		{label: KindGomsEngine.Label() + " (benchserver)", listener: "grpc (gRPC)", start: benchServer(KindGomsEngine), grpc: true},
		{label: KindConnect.Label() + " (benchserver)", listener: "gRPC", start: benchServer(KindConnect), grpc: true},
		{label: KindGRPCGo.Label() + " (grpcserver)", listener: "gRPC", start: benchServer(KindGRPCGo), grpc: true},
	}
}

// measureIdle starts the target's server, reads its RSS once settled, opens
// conns h2c connections that each make one call and stay open, and reads
// the RSS again.
func measureIdle(ctx context.Context, t idleTarget, conns int, settle time.Duration) (idleResult, error) {
	res := idleResult{target: t, conns: conns}
	p, addr, id, err := t.start(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = p.stop() }()
	if err := load.Sleep(ctx, settle); err != nil {
		return res, err
	}
	if res.idle, err = procStatus(p.pid(), "VmRSS"); err != nil {
		return res, err
	}
	body, header, err := idleRequest(t.grpc, id)
	if err != nil {
		return res, err
	}
	transports := make([]*http.Transport, 0, conns)
	defer func() {
		for _, tr := range transports {
			tr.CloseIdleConnections()
		}
	}()
	for range conns {
		tr := h2cTransport()
		transports = append(transports, tr)
		if err := callOnce(ctx, tr, "http://"+addr+gomsv1connect.GoMsServiceGetProcedure, body, header); err != nil {
			return res, fmt.Errorf("%s, %s: %w", t.label, t.listener, err)
		}
	}
	if err := load.Sleep(ctx, settle); err != nil {
		return res, err
	}
	if err := p.alive(); err != nil {
		return res, err
	}
	if res.loaded, err = procStatus(p.pid(), "VmRSS"); err != nil {
		return res, err
	}
	res.perConn = (res.loaded - res.idle) / int64(conns)
	return res, nil
}

// idleRequest returns the body and headers of a unary Get, in gRPC or in
// the Connect protocol with binary protobuf.
func idleRequest(grpc bool, id string) ([]byte, http.Header, error) {
	msg, err := proto.Marshal(&gomsv1.GetRequest{Id: id})
	if err != nil {
		return nil, nil, err
	}
	if !grpc {
		return msg, http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}}, nil
	}
	envelope := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(envelope[1:], uint32(len(msg)))
	return append(envelope, msg...), http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}, nil
}

// h2cTransport makes its own connection: one transport per idle
// connection.
func h2cTransport() *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols:          &protocols,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}
}

// callOnce makes one request and reads the whole answer. Any HTTP status
// but a server error will do: the point is a connection that has served a
// call.
func callOnce(ctx context.Context, t *http.Transport, url string, body []byte, header http.Header) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	res, err := t.RoundTrip(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode >= 500 {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return nil
}

// waitReady polls url until it answers 200, for up to 30s.
func waitReady(ctx context.Context, p *process, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := p.alive(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if res, err := client.Do(req); err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
		}
		if err := load.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: %s not ready after 30s\n%s", p.name, url, p.logTail())
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
