package gomstest

import (
	"testing"

	"connectrpc.com/connect"
)

// Protocol is an RPC protocol and codec a test client speaks.
type Protocol string

const (
	// GRPC is gRPC with protobuf, over h2c.
	GRPC Protocol = "grpc"
	// GRPCWeb is gRPC-Web with protobuf, over HTTP/1.1.
	GRPCWeb Protocol = "grpcweb"
	// ConnectJSON is the Connect protocol with JSON, over HTTP/1.1: what
	// browsers and curl send.
	ConnectJSON Protocol = "connect+json"
	// ConnectProto is the Connect protocol with protobuf, over HTTP/1.1.
	ConnectProto Protocol = "connect+proto"
)

// Protocols lists every Protocol, for tests that run against each.
var Protocols = []Protocol{GRPC, GRPCWeb, ConnectJSON, ConnectProto}

// ClientOptions returns the connect client options that select p.
func (p Protocol) ClientOptions() []connect.ClientOption {
	switch p {
	case GRPC:
		return []connect.ClientOption{connect.WithGRPC()}
	case GRPCWeb:
		return []connect.ClientOption{connect.WithGRPCWeb()}
	case ConnectJSON:
		return []connect.ClientOption{connect.WithProtoJSON()}
	default:
		return nil
	}
}

// Dial returns a client, built by a protoc-gen-connect-go constructor such
// as itemsv1connect.NewItemServiceClient, that calls the named listener
// of s in protocol p (HTTP/2 for gRPC, HTTP/1.1 otherwise), with opts
// after the protocol's options. An empty listener name means
// DefaultListener. The test's cleanup closes the client's connections.
func Dial[T any](tb testing.TB, s *Server, listener string, p Protocol, newClient func(connect.HTTPClient, string, ...connect.ClientOption) T, opts ...connect.ClientOption) T {
	tb.Helper()
	if listener == "" {
		listener = DefaultListener
	}
	httpClient := HTTP1(tb)
	if p == GRPC {
		httpClient = H2C(tb)
	}
	return newClient(httpClient, s.URL(listener), append(p.ClientOptions(), opts...)...)
}

// InProcess returns a client, built by a protoc-gen-connect-go
// constructor, that calls service the way the server's own handlers do:
// through Server.Client, in-process when the service is mounted here, with
// the server's ClientOptions and then opts.
func InProcess[T any](s *Server, service string, newClient func(connect.HTTPClient, string, ...connect.ClientOption) T, opts ...connect.ClientOption) T {
	httpClient, baseURL := s.Client(service)
	return newClient(httpClient, baseURL, append(s.ClientOptions(), opts...)...)
}
