package goms

import (
	"net/http"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		method, contentType string
		want                protocol
	}{
		{http.MethodPost, "application/grpc", protocolGRPC},
		{http.MethodPost, "application/grpc+proto", protocolGRPC},
		{http.MethodPost, "application/grpc+json", protocolGRPC},
		{http.MethodPost, "application/grpc;charset=utf-8", protocolGRPC},
		{http.MethodPost, "application/grpc ; charset=utf-8", protocolGRPC},
		{http.MethodPost, "application/GRPC", protocolGRPC},
		{http.MethodPost, "Application/Grpc+Proto", protocolGRPC},
		{http.MethodPost, "application/grpc-web", protocolGRPCWeb},
		{http.MethodPost, "application/grpc-web+proto", protocolGRPCWeb},
		{http.MethodPost, "application/grpc-web+json", protocolGRPCWeb},
		{http.MethodPost, "application/GRPC-WEB+JSON", protocolGRPCWeb},
		{http.MethodPost, "application/json", protocolConnect},
		{http.MethodPost, "application/json; charset=utf-8", protocolConnect},
		{http.MethodPost, "application/proto", protocolConnect},
		{http.MethodPost, "application/connect+proto", protocolConnect},
		{http.MethodPost, "application/connect+json", protocolConnect},
		// Look-alikes of the gRPC types are not gRPC.
		{http.MethodPost, "application/grpcx", protocolConnect},
		{http.MethodPost, "application/grpc-webx", protocolConnect},
		{http.MethodPost, "application/", protocolConnect},
		{http.MethodPost, "application", protocolUnknown},
		{http.MethodPost, "text/plain", protocolUnknown},
		{http.MethodPost, "text/application/grpc", protocolUnknown},
		{http.MethodPost, "", protocolUnknown},
		// Connect GET requests carry their message in the URL and no
		// Content-Type; every GET counts as Connect.
		{http.MethodGet, "", protocolConnect},
		{http.MethodGet, "application/grpc", protocolConnect},
		{http.MethodPut, "application/grpc", protocolUnknown},
		{http.MethodPut, "application/json", protocolUnknown},
		{http.MethodHead, "", protocolUnknown},
		{http.MethodDelete, "application/proto", protocolUnknown},
	}
	for _, c := range cases {
		r, err := http.NewRequest(c.method, "http://goms.test/goms.v1.GoMsService/Get", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.contentType != "" {
			r.Header.Set("Content-Type", c.contentType)
		}
		if got := classify(r); got != c.want {
			t.Errorf("classify(%s %q) = %v, want %v", c.method, c.contentType, got, c.want)
		}
	}
}

func TestClassifyAllocs(t *testing.T) {
	r, err := http.NewRequest(http.MethodPost, "http://goms.test/goms.v1.GoMsService/Get", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/grpc-web+proto")
	if n := testing.AllocsPerRun(100, func() { classify(r) }); n != 0 {
		t.Errorf("classify allocates %v times per call, want 0 (as its doc says)", n)
	}
}

func TestModeAccepts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		mode Mode
		want map[protocol]bool
	}{
		{ModeGRPC, map[protocol]bool{protocolGRPC: true}},
		// Unknown requests go on to connect, which answers 415.
		{ModeHTTP, map[protocol]bool{protocolGRPCWeb: true, protocolConnect: true, protocolUnknown: true}},
		{ModeGateway, map[protocol]bool{protocolGRPC: true, protocolGRPCWeb: true, protocolConnect: true, protocolUnknown: true}},
	}
	for _, c := range cases {
		for _, p := range []protocol{protocolUnknown, protocolGRPC, protocolGRPCWeb, protocolConnect} {
			if got := c.mode.accepts(p); got != c.want[p] {
				t.Errorf("%s accepts %v: %v, want %v", c.mode, p, got, c.want[p])
			}
		}
	}
}

func TestCheckPath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path, service string
		ok            bool
	}{
		{"/goms.v1.GoMsService/", "goms.v1.GoMsService", true},
		{"/Service/", "Service", true},
		{"/metrics", "", true},
		{"/debug/pprof/x", "", true},
		{"/", "", false},
		{"", "", false},
		{"metrics", "", false},
		{"/a/b/", "", false},
		{"/bad name/", "", false},
		{"/1bad.Service/", "", false},
		{"/goms..v1/", "", false},
	}
	for _, c := range cases {
		service, err := checkPath(c.path)
		if (err == nil) != c.ok || service != c.service {
			t.Errorf("checkPath(%q) = %q, %v; want %q, ok %v", c.path, service, err, c.service, c.ok)
		}
	}
}
