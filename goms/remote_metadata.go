package goms

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// What crosses the remote bridge besides messages: errors with their codes
// and details, and headers and trailers as gRPC metadata.

// connectError turns a grpc-go error into the connect error the caller
// gets: the same code, message and details; calls that reached no endpoint
// name the service.
func (r *remote) connectError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return connect.NewError(connect.CodeUnknown, err)
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable && !strings.Contains(msg, r.Service) && isTransportError(msg) {
		msg = fmt.Sprintf("goms: service %s (remote %q, targets %s): %s", r.Service, r.Name, strings.Join(r.Targets, ", "), msg)
	}
	ce := connect.NewError(connect.Code(st.Code()), errors.New(msg))
	for _, d := range st.Proto().GetDetails() {
		if ed, err := connect.NewErrorDetail(d); err == nil {
			ce.AddDetail(ed)
		}
	}
	return ce
}

// isTransportError tells grpc-go's own messages about connections from
// those of a handler.
func isTransportError(msg string) bool {
	for _, s := range []string{"connection error", "no children to pick from", "connection active but", "last connection error", "produced zero addresses", "name resolver", "error reading from server", "transport is closing", "all endpoints"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// withMetadata adds the remote's headers and trailers to a call's error.
func withMetadata(err error, header, trailer metadata.MD) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		copyIncoming(ce.Meta(), header)
		copyIncoming(ce.Meta(), trailer)
	}
	return err
}

// endpointFailure tells the codes that say an endpoint, not the call, is
// at fault.
func endpointFailure(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Unimplemented, codes.DataLoss, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// outgoingMetadata is the metadata sent for a caller's headers: all but
// those of the protocols and of HTTP itself, binary values decoded; nil
// when there is none.
func outgoingMetadata(h http.Header) metadata.MD {
	var md metadata.MD
	for k, vs := range h {
		if !forwardedHeader(k) {
			continue
		}
		if md == nil {
			md = make(metadata.MD, len(h))
		}
		key := lowerKey(k)
		if strings.HasSuffix(key, "-bin") {
			for _, v := range vs {
				if raw, err := connect.DecodeBinaryHeader(v); err == nil {
					md[key] = append(md[key], string(raw))
				}
			}
			continue
		}
		md[key] = vs
	}
	return md
}

// forwardedHeader tells whether a caller's header travels to the remote.
func forwardedHeader(canonical string) bool {
	switch canonical {
	case "Content-Type", "Content-Length", "Content-Encoding", "Accept-Encoding", "Accept", "Te", "Trailer",
		"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Host", "User-Agent", "X-User-Agent", "X-Grpc-Web",
		"Proxy-Connection", "Proxy-Authorization", "Http2-Settings", "Origin", "Referer":
		return false
	}
	return !strings.HasPrefix(canonical, "Connect-") && !strings.HasPrefix(canonical, "Grpc-") && !strings.HasPrefix(canonical, ":")
}

// copyIncoming adds a remote's metadata to headers, binary values encoded
// as connect expects; grpc-go's own keys stay out.
func copyIncoming(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") || k == "content-type" || k == "te" {
			continue
		}
		ck := canonicalKey(k)
		if strings.HasSuffix(k, "-bin") {
			for _, v := range vs {
				h[ck] = append(h[ck], connect.EncodeBinaryHeader([]byte(v)))
			}
			continue
		}
		h[ck] = append(h[ck], vs...)
	}
}
