package goms

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
)

// Client returns the HTTP client and base URL to call the named service
// (its fully-qualified protobuf name, such as gomsv1connect.GoMsServiceName)
// from inside this process, in the shape generated client constructors
// take:
//
//	httpClient, baseURL := srv.Client(gomsv1connect.GoMsServiceName)
//	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL, connect.WithGRPC())
//
// The client may be created before the server listens. Each call goes to a
// cleartext listener of this server that mounts the service and accepts
// the client's protocol, over kept-alive h2c connections. A call to a
// service this server does not mount fails with CodeUnavailable.
func (s *Server) Client(service string) (connect.HTTPClient, string) {
	s.clientOnce.Do(func() {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		s.transport = &http.Transport{
			Protocols:       &protocols,
			IdleConnTimeout: s.cfg.IdleTimeout,
			DialContext:     (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		}
	})
	return &http.Client{Transport: localTransport{s: s, service: service}}, "http://" + service
}

// localTransport sends each request to a listener of its server chosen by
// the request's protocol.
type localTransport struct {
	s       *Server
	service string
}

func (t localTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	addr, err := t.s.localAddr(t.service, classify(r))
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	r = r.Clone(r.Context())
	r.URL.Host = addr
	r.Host = t.service
	return t.s.transport.RoundTrip(r)
}

// localAddr returns the bound address of a cleartext listener that mounts
// service and accepts protocol p.
func (s *Server) localAddr(service string, p protocol) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mounted := false
	for _, l := range s.listeners {
		if !slices.Contains(l.routes.names, service) {
			continue
		}
		mounted = true
		if l.ln != nil && l.tlsConfig == nil && l.Mode.accepts(p) {
			return l.ln.Addr().String(), nil
		}
	}
	switch {
	case !mounted:
		return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s is not mounted in this process", service))
	case s.state == stateNew:
		return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s: the server does not listen yet", service))
	default:
		return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("goms: service %s: no cleartext listener serves it to %s clients", service, p.humanName()))
	}
}

// closeIdleClients releases the connections of the clients Client made.
func (s *Server) closeIdleClients() {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
}
