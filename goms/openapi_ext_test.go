package goms_test

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/reversTeam/go-ms/gen/connectrpc/conformance/v1/conformancev1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/gomstest"
)

func getOK(t *testing.T, client *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	res, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, res.Status, err)
	}
	return res, body
}

// The document of a service with oneofs, enums, bytes, uint32 and Any
// validates against OpenAPI 3.1 and says them in protobuf's JSON mapping.
func TestOpenAPIJSONMapping(t *testing.T) {
	t.Parallel()
	ts := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "h", Mode: goms.ModeHTTP, OpenAPI: true}}}, func(srv *goms.Server) error {
		return srv.Mount(conformancev1connect.NewConformanceServiceHandler(conformancev1connect.UnimplementedConformanceServiceHandler{}, srv.HandlerOptions()...))
	})
	_, raw := getOK(t, gomstest.HTTP1(t), ts.URL("h")+"/openapi.json")
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if errs != nil {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
		}
	}
	var spec struct {
		Paths      map[string]map[string]json.RawMessage
		Components struct{ Schemas map[string]json.RawMessage }
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	// Unary methods only; the side-effect-free one answers GET too.
	for path, methods := range map[string]string{
		"/connectrpc.conformance.v1.ConformanceService/Unary":           "post",
		"/connectrpc.conformance.v1.ConformanceService/IdempotentUnary": "get post",
		"/connectrpc.conformance.v1.ConformanceService/Unimplemented":   "post",
	} {
		var got []string
		for m := range spec.Paths[path] {
			got = append(got, m)
		}
		if len(got) != len(strings.Fields(methods)) {
			t.Errorf("%s: methods %v, want %s", path, got, methods)
		}
	}
	if _, ok := spec.Paths["/connectrpc.conformance.v1.ConformanceService/ServerStream"]; ok {
		t.Error("a streaming method is described")
	}
	for name, want := range map[string][]string{
		// A oneof: at most one member.
		"connectrpc.conformance.v1.UnaryResponseDefinition": {`"oneOf":[{"required":["responseData"]},{"required":["error"]},{"not":{"anyOf":[{"required":["responseData"]},{"required":["error"]}]}}]`},
		// An enum by its value names; bytes in base64; Any with @type.
		"connectrpc.conformance.v1.Code":            {`"enum":["CODE_UNSPECIFIED","CODE_CANCELED"`},
		"connectrpc.conformance.v1.Error":           {`"code":{"$ref":"#/components/schemas/connectrpc.conformance.v1.Code"}`, `"required":["@type"]`},
		"connectrpc.conformance.v1.RawHTTPResponse": {`"statusCode":{"format":"int64","maximum":4294967295,"minimum":0,"type":"integer"}`},
		"connect.error":                             {`"code":{"enum":["canceled","unknown",`},
	} {
		schema := string(spec.Components.Schemas[name])
		for _, w := range want {
			if !strings.Contains(compact(t, schema), w) {
				t.Errorf("schema %s = %s\nwant it to contain %s", name, schema, w)
			}
		}
	}
}

func compact(t *testing.T, s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// The docs page and its bundle are served, gzipped to those that accept
// it, and refer to nothing outside the listener.
func TestDocsPage(t *testing.T) {
	t.Parallel()
	ts := gomstest.Start(t, goms.Config{Listeners: []goms.Listener{{Name: "h", Mode: goms.ModeGateway, OpenAPI: true}}}, nil)
	client := gomstest.HTTP1(t)
	_, page := getOK(t, client, ts.URL("h")+"/docs")
	for _, ref := range []string{`src="docs/docs.js"`, `href="docs/docs.css"`} {
		if !strings.Contains(string(page), ref) {
			t.Errorf("page lacks %s:\n%s", ref, page)
		}
	}
	if strings.Contains(string(page), "http") {
		t.Errorf("page refers to another origin:\n%s", page)
	}
	// Go's client asks for gzip and decompresses transparently.
	res, js := getOK(t, client, ts.URL("h")+"/docs"+"/docs.js")
	if !res.Uncompressed || len(js) < 100_000 || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("docs.js: %d bytes, uncompressed %v, %q", len(js), res.Uncompressed, res.Header.Get("Content-Type"))
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL("h")+"/docs"+"/docs.css", nil)
	req.Header.Set("Accept-Encoding", "identity")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != "" {
		t.Errorf("Content-Encoding %q for a client that does not accept gzip", res.Header.Get("Content-Encoding"))
	}
	if _, err := gzip.NewReader(res.Body); err == nil {
		t.Error("a gzipped body for a client that does not accept gzip")
	}
}

func TestOpenAPIConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := goms.New(goms.Config{Listeners: []goms.Listener{{Name: "g", Addr: "127.0.0.1:0", Mode: goms.ModeGRPC, OpenAPI: true}}})
	if err == nil || !strings.Contains(err.Error(), `goms: listener "g": rest, openapi and cors need mode`) {
		t.Errorf("openapi on a grpc listener: %v", err)
	}
	srv := gomstest.New(t, goms.Config{Listeners: []goms.Listener{{Name: "h", OpenAPI: true}}})
	if err := srv.Mount("/openapi.json", http.NotFoundHandler()); err != nil {
		t.Fatal(err)
	}
	err = srv.Listen()
	if err == nil || !strings.Contains(err.Error(), `goms: listener "h": openapi: /openapi.json is already mounted`) {
		t.Errorf("a mounted /openapi.json: %v", err)
	}
}
