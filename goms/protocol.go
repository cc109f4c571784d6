package goms

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// protocol is the RPC protocol of a request, as far as its method and
// Content-Type tell.
type protocol uint8

const (
	protocolUnknown protocol = iota
	protocolGRPC
	protocolGRPCWeb
	protocolConnect
)

func (p protocol) String() string {
	switch p {
	case protocolGRPC:
		return connect.ProtocolGRPC
	case protocolGRPCWeb:
		return connect.ProtocolGRPCWeb
	case protocolConnect:
		return connect.ProtocolConnect
	default:
		return "unknown"
	}
}

// classify decides a request's protocol from its method and Content-Type
// only, without allocating: gRPC and gRPC-Web are application/grpc and
// application/grpc-web with an optional "+codec" or ";params" suffix;
// Connect is any other application/* POST (application/json,
// application/proto, application/connect+...) or a GET.
func classify(r *http.Request) protocol {
	if r.Method == http.MethodGet {
		return protocolConnect
	}
	if r.Method != http.MethodPost {
		return protocolUnknown
	}
	ct := r.Header.Get("Content-Type")
	const app = "application/"
	if len(ct) < len(app) || !strings.EqualFold(ct[:len(app)], app) {
		return protocolUnknown
	}
	sub := ct[len(app):]
	switch {
	case hasTypePrefix(sub, "grpc-web"):
		return protocolGRPCWeb
	case hasTypePrefix(sub, "grpc"):
		return protocolGRPC
	default:
		return protocolConnect
	}
}

// hasTypePrefix reports whether sub is name, or name followed by "+" or
// ";" (a codec or parameters), ignoring case.
func hasTypePrefix(sub, name string) bool {
	if len(sub) < len(name) || !strings.EqualFold(sub[:len(name)], name) {
		return false
	}
	if len(sub) == len(name) {
		return true
	}
	switch sub[len(name)] {
	case '+', ';', ' ':
		return true
	}
	return false
}

// errorWriter writes errors in the protocol of the request. Its handler
// options only matter for codecs, so one value serves every listener.
var errorWriter = connect.NewErrorWriter()

// writeError answers r with err in r's own protocol: trailers for gRPC and
// gRPC-Web, a Connect JSON error (with the HTTP status of its code) for
// everything else.
func writeError(w http.ResponseWriter, r *http.Request, err *connect.Error) {
	_ = errorWriter.Write(w, r, err) // a failed write means the caller left
}

// rejection is the error a listener answers for a protocol its mode
// excludes. Messages are built once per listener and protocol.
func rejection(name string, mode Mode, p protocol) *connect.Error {
	return connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
		"listener %q (mode %s) does not accept %s requests: it serves %s",
		name, mode, p.humanName(), mode.protocols()))
}

func (p protocol) humanName() string {
	switch p {
	case protocolGRPC:
		return "gRPC"
	case protocolGRPCWeb:
		return "gRPC-Web"
	case protocolConnect:
		return "Connect"
	default:
		return "non-RPC"
	}
}

// errUnknownProcedure is the base of the unimplemented errors for paths no
// mounted service serves.
var errUnknownProcedure = errors.New("unknown procedure")

func unknownProcedure(listener, path string) *connect.Error {
	return connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
		"%w %s on listener %q: no mounted service serves it", errUnknownProcedure, path, listener))
}

// rejectNonRPC answers a request that is no RPC at all (a method other
// than GET and POST, or a POST whose Content-Type is not application/*) on
// a gRPC-only listener as connect-go's handlers and grpc-go do: 405 with
// Allow, or 415 with the accepted content types, and no body; clients of
// every protocol map those statuses to a code.
func rejectNonRPC(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Accept-Post", "application/grpc, application/grpc+proto, application/grpc+json")
	w.WriteHeader(http.StatusUnsupportedMediaType)
}
