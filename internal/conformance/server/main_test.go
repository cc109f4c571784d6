package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	conformancev1 "github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1"
	"github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1/conformancev1connect"
	"github.com/reversTeam/go-ms/goms"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
)

func TestDelimited(t *testing.T) {
	t.Parallel()
	in := &conformancev1.ServerCompatResponse{Host: "127.0.0.1", Port: 8080, PemCert: []byte("cert")}
	var buf bytes.Buffer
	if err := writeDelimited(&buf, in); err != nil {
		t.Fatal(err)
	}
	size := buf.Len() - 4
	var out conformancev1.ServerCompatResponse
	if err := readDelimited(bytes.NewReader(buf.Bytes()), &out, uint32(size)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, &out, protocmp.Transform()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := readDelimited(bytes.NewReader(buf.Bytes()), &out, uint32(size-1)); err == nil {
		t.Error("a message over the limit was read")
	}
	if err := readDelimited(bytes.NewReader(buf.Bytes()[:buf.Len()-1]), &out, uint32(size)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated message: got %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestUnary starts the server as the runner does and checks, in each
// protocol, that a unary call gets its headers, trailers and request echo,
// and that an error carries the echo in its details.
func TestUnary(t *testing.T) {
	t.Parallel()
	gateway := goms.Listener{Mode: goms.ModeGateway}
	for _, tc := range []struct {
		name     string
		listener goms.Listener
		opts     []connect.ClientOption
	}{
		{"connect", gateway, nil},
		{"grpc", gateway, []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", gateway, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc engine", goms.Listener{Mode: goms.ModeGRPC, Engine: goms.EngineGRPC}, []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := start(t, tc.listener, &conformancev1.ServerCompatRequest{})
			var protocols http.Protocols
			protocols.SetUnencryptedHTTP2(true)
			httpClient := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
			t.Cleanup(httpClient.CloseIdleConnections)
			client := conformancev1connect.NewConformanceServiceClient(httpClient, "http://"+addr, tc.opts...)
			checkUnary(t, client)
		})
	}
}

func TestTLSClientCerts(t *testing.T) {
	t.Parallel()
	clientCert, clientPEM, err := selfSigned(x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	addr, serverPEM := start(t, goms.Listener{Mode: goms.ModeGRPC}, &conformancev1.ServerCompatRequest{UseTls: true, ClientTlsCert: clientPEM})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(serverPEM) {
		t.Fatal("the server sent no PEM certificate")
	}
	newClient := func(certs []tls.Certificate) conformancev1connect.ConformanceServiceClient {
		transport := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true,
		}
		t.Cleanup(transport.CloseIdleConnections)
		return conformancev1connect.NewConformanceServiceClient(&http.Client{Transport: transport}, "https://"+addr, connect.WithGRPC())
	}
	checkUnary(t, newClient([]tls.Certificate{clientCert}))
	_, err = newClient(nil).Unary(context.Background(), connect.NewRequest(&conformancev1.UnaryRequest{}))
	if err == nil {
		t.Error("a client without a certificate was served")
	}
}

func checkUnary(t *testing.T, client conformancev1connect.ConformanceServiceClient) {
	t.Helper()
	ctx := context.Background()
	msg := &conformancev1.UnaryRequest{
		ResponseDefinition: &conformancev1.UnaryResponseDefinition{
			ResponseHeaders:  []*conformancev1.Header{{Name: "x-header", Value: []string{"h"}}},
			ResponseTrailers: []*conformancev1.Header{{Name: "x-trailer", Value: []string{"t"}}},
			Response:         &conformancev1.UnaryResponseDefinition_ResponseData{ResponseData: []byte("data")},
		},
	}
	req := connect.NewRequest(msg)
	req.Header().Set("x-test", "echo")
	res, err := client.Unary(ctx, req)
	if err != nil {
		t.Fatalf("Unary: %v", err)
	}
	if got := string(res.Msg.GetPayload().GetData()); got != "data" {
		t.Errorf("data: got %q, want %q", got, "data")
	}
	if got := res.Header().Get("x-header"); got != "h" {
		t.Errorf("header x-header: got %q, want %q", got, "h")
	}
	if got := res.Trailer().Get("x-trailer"); got != "t" {
		t.Errorf("trailer x-trailer: got %q, want %q", got, "t")
	}
	info := res.Msg.GetPayload().GetRequestInfo()
	if !hasHeader(info.GetRequestHeaders(), "X-Test", "echo") {
		t.Errorf("request headers not echoed: %v", info.GetRequestHeaders())
	}
	if len(info.GetRequests()) != 1 {
		t.Fatalf("got %d requests echoed, want 1", len(info.GetRequests()))
	}
	var echoed conformancev1.UnaryRequest
	if err := info.GetRequests()[0].UnmarshalTo(&echoed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(msg, &echoed, protocmp.Transform()); diff != "" {
		t.Errorf("request echo (-want +got):\n%s", diff)
	}

	msg = &conformancev1.UnaryRequest{
		ResponseDefinition: &conformancev1.UnaryResponseDefinition{
			Response: &conformancev1.UnaryResponseDefinition_Error{Error: &conformancev1.Error{
				Code:    conformancev1.Code_CODE_FAILED_PRECONDITION,
				Message: proto.String("no"),
			}},
		},
	}
	_, err = client.Unary(ctx, connect.NewRequest(msg))
	var connectErr *connect.Error
	if !errors.As(err, &connectErr) {
		t.Fatalf("got error %v, want a *connect.Error", err)
	}
	if connectErr.Code() != connect.CodeFailedPrecondition || connectErr.Message() != "no" {
		t.Errorf("got %v, want failed_precondition: no", connectErr)
	}
	if len(connectErr.Details()) != 1 {
		t.Fatalf("got %d error details, want the request info", len(connectErr.Details()))
	}
	detail, err := connectErr.Details()[0].Value()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := detail.(*conformancev1.ConformancePayload_RequestInfo); !ok {
		t.Errorf("error detail is a %T, want the request info", detail)
	}
}

func hasHeader(hs []*conformancev1.Header, name, value string) bool {
	for _, h := range hs {
		if http.CanonicalHeaderKey(h.GetName()) == name && len(h.GetValue()) == 1 && h.GetValue()[0] == value {
			return true
		}
	}
	return false
}

// start runs the server with a listener like lc on req, as the runner
// does, until the test ends, and returns its address and certificate.
func start(t *testing.T, lc goms.Listener, req *conformancev1.ServerCompatRequest) (string, []byte) {
	t.Helper()
	var in bytes.Buffer
	if err := writeDelimited(&in, req); err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := run(ctx, lc, false, &in, outW)
		_ = outW.CloseWithError(err)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var res conformancev1.ServerCompatResponse
	if err := readDelimited(outR, &res, maxCompatRequestBytes); err != nil {
		t.Fatalf("reading ServerCompatResponse: %v", err)
	}
	if req.GetUseTls() != (len(res.GetPemCert()) > 0) {
		t.Fatalf("use_tls %v, but got a certificate of %d bytes", req.GetUseTls(), len(res.GetPemCert()))
	}
	return net.JoinHostPort(res.GetHost(), strconv.Itoa(int(res.GetPort()))), res.GetPemCert()
}
