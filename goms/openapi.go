package goms

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// openAPIPath is where a listener with Listener.OpenAPI serves the OpenAPI
// 3.1 document of what is mounted on it.
const openAPIPath = "/openapi.json"

// openAPIVersion is the version of the OpenAPI specification the document
// follows.
const openAPIVersion = "3.1.0"

// openAPIRoutes returns the OpenAPI document and the docs page of a
// listener with Listener.OpenAPI; chains and auth tell which procedures ask
// for credentials.
func openAPIRoutes(l *listener, chains *chains, auth Auth) (map[string]http.Handler, error) {
	o := &openAPI{chains: chains, auth: auth, schemas: make(map[string]any), paths: make(map[string]map[string]any)}
	doc, err := json.MarshalIndent(o.document(l), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("goms: listener %q: openapi: %w", l.Name, err)
	}
	routes := docsRoutes()
	routes[openAPIPath] = openAPIHandler(doc)
	return routes, nil
}

func openAPIHandler(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: "+openAPIPath+" answers GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Length", strconv.Itoa(len(doc)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(doc)
		}
	})
}

// openAPI builds the document of one listener.
type openAPI struct {
	chains  *chains
	auth    Auth
	schemas map[string]any // components.schemas, by message or enum full name
	paths   map[string]map[string]any
	secured bool // some operation needs credentials
}

// document describes the unary procedures mounted on l, as Connect
// (POST, and GET for side-effect-free methods) and, when l serves REST, as
// the routes of their google.api.http rules. Streaming methods are left
// out: their Connect framing is not something OpenAPI can describe.
// Descriptions are not included: generated code carries no comments.
func (o *openAPI) document(l *listener) map[string]any {
	var tags []any
	for _, name := range l.mux.names {
		desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		sd, ok := desc.(protoreflect.ServiceDescriptor)
		if err != nil || !ok || builtinService(name) {
			continue
		}
		tags = append(tags, map[string]any{"name": name})
		methods := sd.Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			if m.IsStreamingClient() || m.IsStreamingServer() {
				continue
			}
			o.addConnect(m)
			if l.REST {
				o.addREST(m)
			}
		}
	}
	o.schemas["connect.error"] = connectErrorSchema()
	o.schemas["google.rpc.Status"] = rpcStatusSchema()
	components := map[string]any{"schemas": o.schemas}
	if o.secured {
		components["securitySchemes"] = map[string]any{
			"bearer": map[string]any{"type": "http", "scheme": "bearer"},
			"apiKey": map[string]any{"type": "apiKey", "in": "header", "name": o.auth.APIKeyHeader},
		}
	}
	paths := make(map[string]any, len(o.paths))
	for p, ops := range o.paths {
		paths[p] = ops
	}
	return map[string]any{
		"openapi": openAPIVersion,
		"info": map[string]any{
			"title":       fmt.Sprintf("listener %q", l.Name),
			"version":     "1",
			"description": "The unary procedures mounted on this listener, in the Connect protocol and as the REST routes of their google.api.http rules. Schemas follow protobuf's JSON mapping. The same procedures answer gRPC and gRPC-Web.",
		},
		"tags":       tags,
		"paths":      paths,
		"components": components,
	}
}

// security returns the security requirements of a procedure: bearer token
// or API key where the auth interceptor runs and the policy asks for
// credentials the Verifier checks.
func (o *openAPI) security(procedure string) []any {
	c := o.chains
	if c.auth == nil || o.auth.Verifier == nil || !slices.Contains(c.names(procedure), interceptorAuth) ||
		c.auth.policy(procedure) != policyAuthenticated {
		return nil
	}
	o.secured = true
	return []any{map[string]any{"bearer": []any{}}, map[string]any{"apiKey": []any{}}}
}

func (o *openAPI) add(path, method string, op map[string]any) {
	ops := o.paths[path]
	if ops == nil {
		ops = make(map[string]any)
		o.paths[path] = ops
	}
	if _, taken := ops[method]; !taken {
		ops[method] = op
	}
}

// addConnect describes a unary method in the Connect protocol.
func (o *openAPI) addConnect(m protoreflect.MethodDescriptor) {
	service := string(m.Parent().FullName())
	procedure := "/" + service + "/" + string(m.Name())
	in, out := o.ref(m.Input()), o.ref(m.Output())
	responses := map[string]any{
		"200": map[string]any{
			"description": "Success",
			"content":     map[string]any{"application/json": map[string]any{"schema": out}},
		},
		"default": map[string]any{
			"description": "Error",
			"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/connect.error"}}},
		},
	}
	security := o.security(procedure)
	protocolHeader := map[string]any{
		"name": "Connect-Protocol-Version", "in": "header",
		"schema": map[string]any{"type": "string", "const": "1"},
	}
	post := map[string]any{
		"operationId": service + "." + string(m.Name()),
		"summary":     string(m.Name()),
		"tags":        []any{service},
		"parameters":  []any{protocolHeader},
		"requestBody": map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": in}},
		},
		"responses": responses,
	}
	if security != nil {
		post["security"] = security
	}
	o.add(procedure, "post", post)
	if idempotency(m) != descriptorpb.MethodOptions_NO_SIDE_EFFECTS {
		return
	}
	get := map[string]any{
		"operationId": service + "." + string(m.Name()) + ".get",
		"summary":     string(m.Name()) + " (GET)",
		"tags":        []any{service},
		"parameters": []any{
			map[string]any{"name": "encoding", "in": "query", "required": true, "schema": map[string]any{"type": "string", "enum": []any{"json"}}},
			map[string]any{"name": "message", "in": "query", "required": true, "content": map[string]any{"application/json": map[string]any{"schema": in}}},
			map[string]any{"name": "connect", "in": "query", "schema": map[string]any{"type": "string", "enum": []any{"v1"}}},
		},
		"responses": responses,
	}
	if security != nil {
		get["security"] = security
	}
	o.add(procedure, "get", get)
}

func idempotency(m protoreflect.MethodDescriptor) descriptorpb.MethodOptions_IdempotencyLevel {
	opts, _ := m.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel()
}

// addREST describes the REST routes of a method's google.api.http rule
// and its additional bindings.
func (o *openAPI) addREST(m protoreflect.MethodDescriptor) {
	rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		return
	}
	service := string(m.Parent().FullName())
	security := o.security("/" + service + "/" + string(m.Name()))
	for i, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
		method, template := httpRulePattern(r)
		if method == "" {
			continue
		}
		path, vars := restPath(template)
		id := service + "." + string(m.Name()) + ".rest"
		if i > 0 {
			id += strconv.Itoa(i)
		}
		op := map[string]any{
			"operationId": id,
			"summary":     string(m.Name()) + " (REST)",
			"tags":        []any{service},
			"responses": map[string]any{
				"200": map[string]any{
					"description": "Success",
					"content":     map[string]any{"application/json": map[string]any{"schema": o.bodySchema(m.Output(), r.GetResponseBody())}},
				},
				"default": map[string]any{
					"description": "Error, with the HTTP status of its code",
					"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/google.rpc.Status"}}},
				},
			},
		}
		var params []any
		used := make(map[string]bool)
		for _, v := range vars {
			used[v] = true
			params = append(params, map[string]any{
				"name": v, "in": "path", "required": true, "schema": o.fieldPathSchema(m.Input(), v),
			})
		}
		switch body := r.GetBody(); body {
		case "*":
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": o.ref(m.Input())}}}
		default:
			if body != "" {
				used[body] = true
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": o.bodySchema(m.Input(), body)}}}
			}
			params = append(params, o.queryParams(m.Input(), used)...)
		}
		if params != nil {
			op["parameters"] = params
		}
		if security != nil {
			op["security"] = security
		}
		o.add(path, method, op)
	}
}

func httpRulePattern(r *annotations.HttpRule) (method, template string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "get", p.Get
	case *annotations.HttpRule_Post:
		return "post", p.Post
	case *annotations.HttpRule_Put:
		return "put", p.Put
	case *annotations.HttpRule_Patch:
		return "patch", p.Patch
	case *annotations.HttpRule_Delete:
		return "delete", p.Delete
	case *annotations.HttpRule_Custom:
		return strings.ToLower(p.Custom.GetKind()), p.Custom.GetPath()
	}
	return "", ""
}

// restPath turns a google.api.http path template into an OpenAPI path,
// "/v1/{name=shelves/*}" into "/v1/{name}", and returns its variables.
func restPath(template string) (string, []string) {
	var b strings.Builder
	var vars []string
	for {
		open := strings.IndexByte(template, '{')
		if open < 0 {
			b.WriteString(template)
			return b.String(), vars
		}
		end := strings.IndexByte(template[open:], '}')
		if end < 0 {
			b.WriteString(template)
			return b.String(), vars
		}
		name, _, _ := strings.Cut(template[open+1:open+end], "=")
		b.WriteString(template[:open] + "{" + name + "}")
		vars = append(vars, name)
		template = template[open+end+1:]
	}
}

// fieldPathSchema returns the schema of a dotted field path of msg, "id"
// or "item.id".
func (o *openAPI) fieldPathSchema(msg protoreflect.MessageDescriptor, path string) map[string]any {
	var fd protoreflect.FieldDescriptor
	for seg := range strings.SplitSeq(path, ".") {
		if msg == nil {
			return map[string]any{"type": "string"}
		}
		fd = msg.Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			return map[string]any{"type": "string"}
		}
		msg = fd.Message()
	}
	return o.fieldSchema(fd)
}

// bodySchema is the schema of the message, or of its field named by a
// rule's body or response_body.
func (o *openAPI) bodySchema(msg protoreflect.MessageDescriptor, field string) map[string]any {
	if field == "" || field == "*" {
		return o.ref(msg)
	}
	return o.fieldPathSchema(msg, field)
}

// queryParams describes the top-level fields of msg that a REST call can
// set in its query: scalars, enums, and lists of them.
func (o *openAPI) queryParams(msg protoreflect.MessageDescriptor, used map[string]bool) []any {
	var params []any
	fields := msg.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if used[string(fd.Name())] || fd.IsMap() || fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
			continue
		}
		params = append(params, map[string]any{
			"name": fd.JSONName(), "in": "query", "schema": o.fieldSchema(fd),
		})
	}
	return params
}

// ref returns a reference to the schema of a message, adding it (and the
// messages and enums it uses) to the components.
func (o *openAPI) ref(md protoreflect.MessageDescriptor) map[string]any {
	if wkt := wellKnownSchema(md.FullName()); wkt != nil {
		return wkt
	}
	name := string(md.FullName())
	if _, done := o.schemas[name]; !done {
		o.schemas[name] = nil // placeholder for recursive messages
		o.schemas[name] = o.messageSchema(md)
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// messageSchema describes a message in protobuf's JSON mapping: fields by
// their JSON names, a oneof's members exclusive, and the field rules of
// buf.validate that JSON Schema can say.
func (o *openAPI) messageSchema(md protoreflect.MessageDescriptor) map[string]any {
	props := make(map[string]any)
	var required []any
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		schema := o.fieldSchema(fd)
		if validateRequired(fd) {
			required = append(required, fd.JSONName())
		}
		props[fd.JSONName()] = schema
	}
	schema := map[string]any{"type": "object", "title": string(md.Name()), "properties": props, "additionalProperties": false}
	if required != nil {
		schema["required"] = required
	}
	var exclusive []any
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		od := oneofs.Get(i)
		if od.IsSynthetic() || od.Fields().Len() < 2 {
			continue
		}
		// At most one member is set: exactly one of "this one is set", for
		// each member, or "none is set" holds.
		var each, anySet []any
		for j := range od.Fields().Len() {
			set := map[string]any{"required": []any{od.Fields().Get(j).JSONName()}}
			each = append(each, set)
			anySet = append(anySet, set)
		}
		each = append(each, map[string]any{"not": map[string]any{"anyOf": anySet}})
		exclusive = append(exclusive, map[string]any{"oneOf": each})
	}
	if exclusive != nil {
		schema["allOf"] = exclusive
	}
	return schema
}

// fieldSchema describes one field: a list, a map or a single value.
func (o *openAPI) fieldSchema(fd protoreflect.FieldDescriptor) map[string]any {
	switch {
	case fd.IsMap():
		return withRules(map[string]any{"type": "object", "additionalProperties": o.singularSchema(fd.MapValue())}, fd)
	case fd.IsList():
		return withRules(map[string]any{"type": "array", "items": o.singularSchema(fd)}, fd)
	}
	return withRules(o.singularSchema(fd), fd)
}

// singularSchema describes one value of a field, in protobuf's JSON
// mapping.
func (o *openAPI) singularSchema(fd protoreflect.FieldDescriptor) map[string]any {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "format": "byte", "contentEncoding": "base64"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0, "maximum": uint64(1)<<32 - 1}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		// JSON strings, so that no precision is lost; numbers are accepted.
		return map[string]any{"type": []any{"string", "integer"}, "format": "int64", "pattern": `^-?[0-9]+$`}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return map[string]any{"type": []any{"string", "integer"}, "format": "uint64", "pattern": `^[0-9]+$`}
	case protoreflect.FloatKind:
		return map[string]any{"oneOf": []any{map[string]any{"type": "number", "format": "float"}, nonFinite()}}
	case protoreflect.DoubleKind:
		return map[string]any{"oneOf": []any{map[string]any{"type": "number", "format": "double"}, nonFinite()}}
	case protoreflect.EnumKind:
		return o.enumRef(fd.Enum())
	default:
		return o.ref(fd.Message())
	}
}

func nonFinite() map[string]any {
	return map[string]any{"type": "string", "enum": []any{"NaN", "Infinity", "-Infinity"}}
}

// enumRef returns a reference to an enum's schema: its value names, as
// protobuf's JSON mapping writes them.
func (o *openAPI) enumRef(ed protoreflect.EnumDescriptor) map[string]any {
	if ed.FullName() == "google.protobuf.NullValue" {
		return map[string]any{"type": "null"}
	}
	name := string(ed.FullName())
	if _, done := o.schemas[name]; !done {
		values := ed.Values()
		names := make([]any, values.Len())
		for i := range values.Len() {
			names[i] = string(values.Get(i).Name())
		}
		o.schemas[name] = map[string]any{"type": "string", "title": string(ed.Name()), "enum": names}
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// wellKnownSchema describes the well-known types that protobuf's JSON
// mapping writes in their own way, and nil for any other message.
func wellKnownSchema(name protoreflect.FullName) map[string]any {
	switch name {
	case "google.protobuf.Timestamp":
		return map[string]any{"type": "string", "format": "date-time"}
	case "google.protobuf.Duration":
		return map[string]any{"type": "string", "format": "duration", "pattern": `^-?[0-9]+(\.[0-9]{1,9})?s$`}
	case "google.protobuf.FieldMask":
		return map[string]any{"type": "string", "format": "field-mask"}
	case "google.protobuf.Empty":
		return map[string]any{"type": "object", "additionalProperties": false}
	case "google.protobuf.Struct":
		return map[string]any{"type": "object", "additionalProperties": true}
	case "google.protobuf.Value":
		return map[string]any{}
	case "google.protobuf.ListValue":
		return map[string]any{"type": "array"}
	case "google.protobuf.Any":
		return map[string]any{"type": "object", "required": []any{"@type"}, "properties": map[string]any{"@type": map[string]any{"type": "string"}}, "additionalProperties": true}
	case "google.protobuf.BoolValue":
		return map[string]any{"type": []any{"boolean", "null"}}
	case "google.protobuf.StringValue":
		return map[string]any{"type": []any{"string", "null"}}
	case "google.protobuf.BytesValue":
		return map[string]any{"type": []any{"string", "null"}, "format": "byte", "contentEncoding": "base64"}
	case "google.protobuf.Int32Value", "google.protobuf.UInt32Value":
		return map[string]any{"type": []any{"integer", "null"}}
	case "google.protobuf.Int64Value", "google.protobuf.UInt64Value":
		return map[string]any{"type": []any{"string", "integer", "null"}, "pattern": `^-?[0-9]+$`}
	case "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return map[string]any{"type": []any{"number", "string", "null"}}
	}
	return nil
}

// connectErrorSchema is the body of a Connect error.
func connectErrorSchema() map[string]any {
	codes := make([]any, 0, 16)
	for c := connect.CodeCanceled; c <= connect.CodeUnauthenticated; c++ {
		codes = append(codes, c.String())
	}
	return map[string]any{
		"type":  "object",
		"title": "Connect error",
		"properties": map[string]any{
			"code":    map[string]any{"type": "string", "enum": codes},
			"message": map[string]any{"type": "string"},
			"details": map[string]any{"type": "array", "items": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"type":  map[string]any{"type": "string"},
					"value": map[string]any{"type": "string", "contentEncoding": "base64"},
					"debug": map[string]any{},
				},
			}},
		},
	}
}

// rpcStatusSchema is the body of a REST error: google.rpc.Status in JSON.
func rpcStatusSchema() map[string]any {
	return map[string]any{
		"type":  "object",
		"title": "Status",
		"properties": map[string]any{
			"code":    map[string]any{"type": "integer", "format": "int32"},
			"message": map[string]any{"type": "string"},
			"details": map[string]any{"type": "array", "items": map[string]any{
				"type":       "object",
				"properties": map[string]any{"@type": map[string]any{"type": "string"}},
			}},
		},
	}
}
