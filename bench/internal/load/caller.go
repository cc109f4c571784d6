// Package load drives closed-loop load against one server: a fixed number
// of workers, each calling goms.v1.GoMsService/Get back to back through
// one client per protocol that all servers of that protocol share, over
// reused connections.
package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// Protocol is a wire protocol over a transport, as a client speaks it.
type Protocol int

// The protocols of the benchmark, in report order.
const (
	// GRPC is gRPC over h2c, sent by a grpc-go client.
	GRPC Protocol = iota
	// GRPCWebHTTP1 is gRPC-Web over HTTP/1.1, sent by a connect-go client.
	GRPCWebHTTP1
	// GRPCWebH2C is gRPC-Web over h2c, sent by a connect-go client.
	GRPCWebH2C
	// ConnectProtoHTTP1 is the Connect protocol with binary protobuf over
	// HTTP/1.1, sent by a connect-go client.
	ConnectProtoHTTP1
	// ConnectProtoH2C is Connect binary over h2c, by a connect-go client.
	ConnectProtoH2C
	// ConnectJSONHTTP1 is the Connect protocol with JSON over HTTP/1.1:
	// POST /goms.v1.GoMsService/Get with a JSON body, the request
	// grpc-gateway serves too, sent by a raw HTTP/1.1 client, one
	// connection per worker, that decodes with protojson the first answer
	// of each connection and compares the others with it.
	ConnectJSONHTTP1
	// ConnectJSONH2C is the same JSON request over h2c, sent by a net/http
	// client that decodes every answer with protojson.
	ConnectJSONH2C
)

// Protocols lists every protocol in report order.
func Protocols() []Protocol {
	return []Protocol{GRPC, GRPCWebHTTP1, GRPCWebH2C, ConnectProtoHTTP1, ConnectProtoH2C, ConnectJSONHTTP1, ConnectJSONH2C}
}

func (p Protocol) String() string {
	switch p {
	case GRPC:
		return "gRPC, h2c"
	case GRPCWebHTTP1:
		return "gRPC-Web, HTTP/1.1"
	case GRPCWebH2C:
		return "gRPC-Web, h2c"
	case ConnectProtoHTTP1:
		return "Connect proto, HTTP/1.1"
	case ConnectProtoH2C:
		return "Connect proto, h2c"
	case ConnectJSONHTTP1:
		return "Connect JSON, HTTP/1.1"
	case ConnectJSONH2C:
		return "Connect JSON, h2c"
	default:
		return fmt.Sprintf("Protocol(%d)", int(p))
	}
}

// h2c reports whether p runs over cleartext HTTP/2.
func (p Protocol) h2c() bool {
	switch p {
	case GRPCWebHTTP1, ConnectProtoHTTP1, ConnectJSONHTTP1:
		return false
	default:
		return true
	}
}

// Caller makes one call; it is safe for concurrent use.
type Caller interface {
	// Call gets the item and checks the size of its name.
	Call(ctx context.Context) error
	// Close releases the client's connections.
	Close()
}

// NewCaller returns the client of protocol p for the server at addr,
// calling Get on item id, whose name is nameLen bytes long. conns bounds
// the HTTP/1.1 connections kept open: one per worker.
func NewCaller(p Protocol, addr, id string, nameLen, conns int) (Caller, error) {
	req := &gomsv1.GetRequest{Id: id}
	switch p {
	case GRPC:
		// grpc-go offers every compressor linked into the program: the
		// harness links none (TestNoCompressorLinked).
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return &grpcCaller{conn: conn, req: req, nameLen: nameLen}, nil
	case ConnectJSONHTTP1, ConnectJSONH2C:
		body, err := protojson.Marshal(req)
		if err != nil {
			return nil, err
		}
		if p == ConnectJSONHTTP1 {
			return newHTTP1Caller(addr, body, nameLen, conns), nil
		}
		t := newTransport(p.h2c(), conns)
		return &jsonCaller{
			http:    &http.Client{Transport: t},
			t:       t,
			url:     "http://" + addr + gomsv1connect.GoMsServiceGetProcedure,
			body:    body,
			nameLen: nameLen,
		}, nil
	case GRPCWebHTTP1, GRPCWebH2C, ConnectProtoHTTP1, ConnectProtoH2C:
		t := newTransport(p.h2c(), conns)
		// No compression: grpc-go and the plain JSON client use none.
		opts := []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}
		if p == GRPCWebHTTP1 || p == GRPCWebH2C {
			opts = append(opts, connect.WithGRPCWeb())
		}
		client := gomsv1connect.NewGoMsServiceClient(&http.Client{Transport: t}, "http://"+addr, opts...)
		return &connectCaller{client: client, t: t, req: req, nameLen: nameLen}, nil
	default:
		return nil, fmt.Errorf("load: unknown protocol %v", p)
	}
}

// newTransport returns an HTTP/1.1 or h2c (prior knowledge) transport that
// keeps up to conns connections and never asks for compression.
func newTransport(h2c bool, conns int) *http.Transport {
	var protocols http.Protocols
	if h2c {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	return &http.Transport{
		Protocols:           &protocols,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
}

func checkItem(res *gomsv1.GetResponse, nameLen int) error {
	if got := len(res.GetItem().GetName()); got != nameLen {
		return fmt.Errorf("load: got an item name of %d bytes, want %d", got, nameLen)
	}
	return nil
}

type grpcCaller struct {
	conn    *grpc.ClientConn
	req     *gomsv1.GetRequest
	nameLen int
}

func (c *grpcCaller) Call(ctx context.Context) error {
	res := new(gomsv1.GetResponse)
	if err := c.conn.Invoke(ctx, gomsv1connect.GoMsServiceGetProcedure, c.req, res); err != nil {
		return err
	}
	return checkItem(res, c.nameLen)
}

func (c *grpcCaller) Close() { _ = c.conn.Close() }

type connectCaller struct {
	client  gomsv1connect.GoMsServiceClient
	t       *http.Transport
	req     *gomsv1.GetRequest
	nameLen int
}

func (c *connectCaller) Call(ctx context.Context) error {
	res, err := c.client.Get(ctx, connect.NewRequest(c.req))
	if err != nil {
		return err
	}
	return checkItem(res.Msg, c.nameLen)
}

func (c *connectCaller) Close() { c.t.CloseIdleConnections() }

type jsonCaller struct {
	http    *http.Client
	t       *http.Transport
	url     string
	body    []byte
	nameLen int
}

func (c *jsonCaller) Call(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("load: %s: %s: %.200s", c.url, res.Status, data)
	}
	var msg gomsv1.GetResponse
	if err := protojson.Unmarshal(data, &msg); err != nil {
		return fmt.Errorf("load: %s: %w", c.url, err)
	}
	return checkItem(&msg, c.nameLen)
}

func (c *jsonCaller) Close() { c.t.CloseIdleConnections() }
