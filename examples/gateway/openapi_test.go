package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/gomstest"
)

const testToken = "s3cret"

// startExample starts the example as main does, on ports of the system's
// choosing, with Delete's token set.
func startExample(t *testing.T, set ...string) *gomstest.Server {
	t.Helper()
	t.Setenv("EXAMPLE_API_TOKEN", testToken)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	cfg, err := goms.LoadConfig([]byte(defaults), "", append([]string{
		"listeners.grpc.address=127.0.0.1:0",
		"listeners.http.address=127.0.0.1:0",
		"admin.address=127.0.0.1:0",
	}, set...)...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ShutdownTimeout = gomstest.ShutdownTimeout
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, shutdown, err := newServer(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	return gomstest.Serve(t, srv)
}

// The example's OpenAPI document is valid OpenAPI 3.1, and every operation
// in it answers, with 200 and a body its schema describes, a request
// built from it.
func TestOpenAPI(t *testing.T) {
	ts := startExample(t)
	base := ts.URL("http")
	client := gomstest.HTTP1(t)
	res, err := client.Get(base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %q", "/openapi.json", res.Status, res.Header.Get("Content-Type"))
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("OpenAPI version %q, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if errs != nil {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("document: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s at %s", se.Reason, se.KeywordLocation)
			}
		}
		t.FailNow()
	}
	var spec openAPISpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}

	ctx := t.Context()
	rpc := gomsv1connect.NewGoMsServiceClient(client, base)
	children := childv1connect.NewChildServiceClient(client, base)
	n := 0
	newItem := func() string {
		n++
		res, err := rpc.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: fmt.Sprint("openapi-", n)}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetItem().GetId()
	}
	ops := 0
	for _, path := range slices.Sorted(maps.Keys(spec.Paths)) {
		for _, method := range slices.Sorted(maps.Keys(spec.Paths[path])) {
			op := spec.Paths[path][method]
			ops++
			// Each operation gets items of its own: Delete removes them.
			ids := map[string]string{"id": newItem()}
			if slices.Contains(op.Tags, childv1connect.ChildServiceName) {
				parent := newItem()
				child, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: parent, Name: "kid"}))
				if err != nil {
					t.Fatal(err)
				}
				ids = map[string]string{"id": child.Msg.GetItem().GetId(), "parentId": parent}
			}
			req := spec.request(t, base, method, path, op, ids)
			if ok, verrs := v.ValidateHttpRequest(req.clone()); !ok {
				t.Errorf("%s %s: the request built from the document does not match it: %v", method, path, messages(verrs))
			}
			httpReq := req.clone()
			res, err := client.Do(httpReq)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("%s %s (%s): %s %s", method, path, op.OperationID, res.Status, body)
				continue
			}
			res.Body = io.NopCloser(bytes.NewReader(body))
			if ok, verrs := v.ValidateHttpResponse(req.clone(), res); !ok {
				t.Errorf("%s %s: the response %s does not match the document: %v", method, path, body, messages(verrs))
			}
		}
	}
	// 2 services × (5 Connect POST + 2 Connect GET + 5 REST).
	if ops != 24 {
		t.Errorf("%d operations, want 24", ops)
	}
}

func messages(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "[%s: %s", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "; %s at %s", se.Reason, se.KeywordLocation)
		}
		b.WriteString("] ")
	}
	return b.String()
}

// openAPISpec is the part of the document the test builds requests from.
type openAPISpec struct {
	Paths      map[string]map[string]openAPIOperation `json:"paths"`
	Components struct {
		Schemas map[string]map[string]any `json:"schemas"`
	} `json:"components"`
}

type openAPIOperation struct {
	OperationID string `json:"operationId"`
	Tags        []string
	Parameters  []struct {
		Name     string                                     `json:"name"`
		In       string                                     `json:"in"`
		Required bool                                       `json:"required"`
		Schema   map[string]any                             `json:"schema"`
		Content  map[string]struct{ Schema map[string]any } `json:"content"`
	} `json:"parameters"`
	RequestBody *struct {
		Content map[string]struct{ Schema map[string]any } `json:"content"`
	} `json:"requestBody"`
	Security []map[string][]string `json:"security"`
}

// builtRequest can be sent more than once.
type builtRequest struct {
	method, url string
	header      http.Header
	body        []byte
}

func (r builtRequest) clone() *http.Request {
	req, _ := http.NewRequest(strings.ToUpper(r.method), r.url, bytes.NewReader(r.body))
	req.Header = r.header.Clone()
	return req
}

// request builds a call of op from the document: path parameters, the
// required query parameters and those with rules, a body with every
// property that has rules, and a bearer token where security asks for
// one. Values of properties named in ids (those that must name existing
// items) come from ids.
func (s openAPISpec) request(t *testing.T, base, method, path string, op openAPIOperation, ids map[string]string) builtRequest {
	t.Helper()
	r := builtRequest{method: method, header: make(http.Header)}
	query := url.Values{}
	for _, p := range op.Parameters {
		switch {
		case p.In == "path":
			path = strings.ReplaceAll(path, "{"+p.Name+"}", url.PathEscape(fmt.Sprint(s.sample(p.Schema, p.Name, ids))))
		case p.In == "query" && p.Content != nil:
			msg, _ := json.Marshal(s.sample(p.Content["application/json"].Schema, "", ids))
			query.Set(p.Name, string(msg))
		case p.In == "query" && (p.Required || p.Schema["pattern"] != nil):
			query.Set(p.Name, fmt.Sprint(s.sample(p.Schema, p.Name, ids)))
		}
	}
	r.url = base + path
	if len(query) > 0 {
		r.url += "?" + query.Encode()
	}
	if op.RequestBody != nil {
		r.body, _ = json.Marshal(s.sample(op.RequestBody.Content["application/json"].Schema, "", ids))
		r.header.Set("Content-Type", "application/json")
	}
	if len(op.Security) > 0 {
		r.header.Set("Authorization", "Bearer "+testToken)
	}
	return r
}

// samples numbers the strings sample makes, since names are unique.
var samples int

// sample returns a value that schema accepts.
func (s openAPISpec) sample(schema map[string]any, name string, ids map[string]string) any {
	if ref, ok := schema["$ref"].(string); ok {
		return s.sample(s.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")], name, ids)
	}
	if id, ok := ids[name]; ok {
		return id
	}
	if c, ok := schema["const"]; ok {
		return c
	}
	if values, ok := schema["enum"].([]any); ok {
		return values[0]
	}
	switch schema["type"] {
	case "object":
		out := map[string]any{}
		props, _ := schema["properties"].(map[string]any)
		for key, p := range props {
			ps := p.(map[string]any)
			if _, isID := ids[key]; isID || ps["minLength"] != nil || ps["pattern"] != nil || ps["minimum"] != nil {
				out[key] = s.sample(ps, key, ids)
			}
		}
		return out
	case "string":
		samples++
		return fmt.Sprint("from-openapi-", samples)
	case "integer":
		if min, ok := schema["minimum"].(float64); ok {
			return min + 1
		}
		return 1
	}
	return nil
}
