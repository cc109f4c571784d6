// Command server is the server under test of the Connect conformance suite:
// it serves connectrpc.conformance.v1.ConformanceService through one goms
// listener, so that the suite checks goms (its protocol filter, listeners,
// TLS and limits) and not only connect-go.
//
// The connectconformance runner, in server mode, starts it once per server
// configuration, writes a size-delimited ServerCompatRequest on its stdin,
// closes stdin, reads a size-delimited ServerCompatResponse from its stdout,
// runs the test cases against the address it names, and stops it with
// SIGTERM:
//
//	connectconformance --mode server --conf conformance/gateway.yaml -- bin/conformance-server -mode gateway
//
// The -mode flag picks the goms listener mode (grpc, http or gateway); the
// runner's configuration must only ask for protocols that mode accepts. The
// -engine flag picks the listener's engine (net/http, or grpc for a
// grpc-mode listener).
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	conformancev1 "github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1"
	"github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1/conformancev1connect"
	"github.com/reversTeam/go-ms/goms"
	"google.golang.org/protobuf/proto"
)

// listenerName is the name of the only listener.
const listenerName = "conformance"

// maxCompatRequestBytes bounds the ServerCompatRequest read from stdin,
// which holds at most two certificates and a key.
const maxCompatRequestBytes = 1 << 20

func main() {
	mode := flag.String("mode", string(goms.ModeGateway), "protocols the goms listener accepts: grpc, http or gateway")
	engine := flag.String("engine", string(goms.EngineNetHTTP), "engine of the goms listener: net/http, or grpc with -mode grpc")
	edge := flag.Bool("edge", false, "serve the conformance service from a second goms server, through this listener as an edge (remote exposed)")
	flag.Parse()
	// The runner closes stdin once it has written the request, so the end
	// of stdin is no signal to stop: SIGTERM is.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal stops the process at once
	lc := goms.Listener{Mode: goms.Mode(*mode), Engine: goms.Engine(*engine)}
	err := run(ctx, lc, *edge, os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance server:", err)
		os.Exit(1)
	}
}

// run reads the ServerCompatRequest from in, starts a goms server whose
// listener has the mode and engine of lc, configured as the request asks,
// writes the ServerCompatResponse to out and serves until ctx ends. With
// edge, that listener exposes the service of a second goms server (a
// gateway listener on h2c) through goms's edge proxy.
func run(ctx context.Context, lc goms.Listener, edge bool, in io.Reader, out io.Writer) error {
	var req conformancev1.ServerCompatRequest
	if err := readDelimited(in, &req, maxCompatRequestBytes); err != nil {
		return fmt.Errorf("reading ServerCompatRequest: %w", err)
	}
	var remotes []goms.Remote
	if edge {
		backend, _, err := newServer(goms.Listener{Mode: goms.ModeGateway}, &conformancev1.ServerCompatRequest{MessageReceiveLimit: req.GetMessageReceiveLimit()}, nil)
		if err != nil {
			return err
		}
		if err := backend.Listen(); err != nil {
			return err
		}
		served := make(chan error, 1)
		go func() { served <- backend.Serve(ctx) }()
		defer func() { <-served }()
		remotes = []goms.Remote{{
			Name: "conformance", Service: conformancev1connect.ConformanceServiceName,
			Targets: []string{backend.Addr(listenerName).String()}, Expose: []string{listenerName},
		}}
	}
	srv, pemCert, err := newServer(lc, &req, remotes)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	addr, ok := srv.Addr(listenerName).(*net.TCPAddr)
	if !ok {
		_ = srv.Close()
		return fmt.Errorf("listener %q has no TCP address", listenerName)
	}
	res := &conformancev1.ServerCompatResponse{
		Host:    addr.IP.String(),
		Port:    uint32(addr.Port),
		PemCert: pemCert,
	}
	if err := writeDelimited(out, res); err != nil {
		_ = srv.Close()
		return fmt.Errorf("writing ServerCompatResponse: %w", err)
	}
	return srv.Serve(ctx)
}

// newServer builds the goms server req describes, with one listener of
// lc's mode and engine on a free loopback port and the conformance service
// mounted (or, with remotes, exposed from elsewhere), and returns it with
// the PEM certificate clients must trust when req asks for TLS.
func newServer(lc goms.Listener, req *conformancev1.ServerCompatRequest, remotes []goms.Remote) (*goms.Server, []byte, error) {
	var (
		tlsConfig *tls.Config
		pemCert   []byte
	)
	if req.GetUseTls() {
		var err error
		tlsConfig, pemCert, err = newTLSConfig(req.GetClientTlsCert())
		if err != nil {
			return nil, nil, err
		}
	}
	lc.Name = listenerName
	lc.Addr = "127.0.0.1:0"
	lc.TLSConfig = tlsConfig
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{lc},
		// Zero keeps goms' default limit.
		MaxMessageBytes: int(req.GetMessageReceiveLimit()),
		Remotes:         remotes,
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, nil, err
	}
	path, handler := conformancev1connect.NewConformanceServiceHandler(conformanceService{}, srv.HandlerOptions()...)
	if err := srv.Mount(path, withQuery(handler)); err != nil {
		return nil, nil, err
	}
	return srv, pemCert, nil
}

// readDelimited reads one message written as a 4-byte big-endian length
// followed by that many bytes of binary protobuf.
func readDelimited(r io.Reader, msg proto.Message, limit uint32) error {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(prefix[:])
	if size > limit {
		return fmt.Errorf("message of %d bytes exceeds the %d-byte limit", size, limit)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return proto.Unmarshal(data, msg)
}

// writeDelimited writes msg as readDelimited reads it.
func writeDelimited(w io.Writer, msg proto.Message) error {
	data, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(data)), uint32(len(data)))
	_, err = w.Write(append(buf, data...))
	return err
}
