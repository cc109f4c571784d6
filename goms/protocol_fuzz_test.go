package goms

import (
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// referenceProtocol is the protocol decision as the classify doc states
// it, written for clarity rather than speed: GET is Connect; a POST whose
// media type, compared ASCII case-insensitively, is application/grpc-web
// or application/grpc, alone or followed by "+", ";" or " ", is gRPC-Web
// or gRPC; any other application/ POST is Connect; everything else is
// unknown.
func referenceProtocol(method, contentType string) protocol {
	switch method {
	case http.MethodGet:
		return protocolConnect
	case http.MethodPost:
	default:
		return protocolUnknown
	}
	lower := []byte(contentType)
	for i, c := range lower {
		if 'A' <= c && c <= 'Z' {
			lower[i] = c + 'a' - 'A'
		}
	}
	sub, ok := strings.CutPrefix(string(lower), "application/")
	if !ok {
		return protocolUnknown
	}
	is := func(name string) bool {
		rest, ok := strings.CutPrefix(sub, name)
		return ok && (rest == "" || strings.ContainsRune("+; ", rune(rest[0])))
	}
	switch {
	case is("grpc-web"):
		return protocolGRPCWeb
	case is("grpc"):
		return protocolGRPC
	default:
		return protocolConnect
	}
}

// grpcGoAccepts is grpc-go's own test of a request's Content-Type
// (internal/grpcutil.ContentSubtype): grpc-go answers any other with 415.
func grpcGoAccepts(contentType string) bool {
	return contentType == "application/grpc" ||
		strings.HasPrefix(contentType, "application/grpc+") ||
		strings.HasPrefix(contentType, "application/grpc;")
}

// FuzzClassify checks that classify never panics and agrees with
// referenceProtocol, and that the grpc engine's router, which decides
// from a connection's first HTTP/2 request whether grpc-go serves it,
// hands grpc-go exactly the POSTs grpc-go accepts, all of which classify
// calls gRPC: what grpc-go would refuse goes to net/http, whose answer is
// the same on both engines.
func FuzzClassify(f *testing.F) {
	for _, c := range []struct{ method, contentType string }{
		{"POST", "application/grpc"},
		{"POST", "application/grpc+proto"},
		{"POST", "application/grpc ; charset=utf-8"},
		{"POST", "Application/GRPC-Web+JSON"},
		{"POST", "application/grpc-webx"},
		{"POST", "application/json; charset=utf-8"},
		{"POST", "application/"},
		{"POST", "text/plain"},
		{"POST", ""},
		{"GET", ""},
		{"GET", "application/grpc"},
		{"PUT", "application/grpc"},
		{"post", "application/grpc"},
		{"POST", "APPL\u0130CATION/grpc"},
		{"POST", "application/grpc\u212a"},
		{"POST", "application/\xffgrpc"},
	} {
		f.Add(c.method, c.contentType)
	}
	f.Fuzz(func(t *testing.T, method, contentType string) {
		r := &http.Request{Method: method, Header: http.Header{"Content-Type": {contentType}}}
		got := classify(r)
		if want := referenceProtocol(method, contentType); got != want {
			t.Errorf("classify(%q, %q) = %v, want %v", method, contentType, got, want)
		}
		h := &http2.MetaHeadersFrame{Fields: []hpack.HeaderField{{Name: "content-type", Value: contentType}}}
		routed := isGRPCContentType(method, h)
		if routed && got != protocolGRPC {
			t.Errorf("the router sends %q %q to grpc-go, which classify calls %v", method, contentType, got)
		}
		if want := method == http.MethodPost && grpcGoAccepts(contentType); routed != want {
			t.Errorf("the router sends %q %q to grpc-go: %v, want %v", method, contentType, routed, want)
		}
	})
}
