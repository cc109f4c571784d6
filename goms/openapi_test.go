package goms

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/apipb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/typepb"
)

// Maps, lists, enums and well-known types in protobuf's JSON mapping.
func TestOpenAPIFieldSchemas(t *testing.T) {
	field := func(m protoreflect.ProtoMessage, name string) protoreflect.FieldDescriptor {
		return m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	}
	for _, tc := range []struct {
		fd   protoreflect.FieldDescriptor
		want string
	}{
		// map<string, google.protobuf.Value>: an object of any values.
		{field(&structpb.Struct{}, "fields"), `{"additionalProperties":{},"type":"object"}`},
		// repeated google.protobuf.Value
		{field(&structpb.ListValue{}, "values"), `{"items":{},"type":"array"}`},
		// google.protobuf.NullValue
		{field(&structpb.Value{}, "null_value"), `{"type":"null"}`},
		// an enum, by reference to its names
		{field(&typepb.Field{}, "kind"), `{"$ref":"#/components/schemas/google.protobuf.Field.Kind"}`},
		// repeated message
		{field(&apipb.Api{}, "methods"), `{"items":{"$ref":"#/components/schemas/google.protobuf.Method"},"type":"array"}`},
		{field(&typepb.Field{}, "number"), `{"format":"int32","type":"integer"}`},
		{field(&typepb.Field{}, "packed"), `{"type":"boolean"}`},
	} {
		o := &openAPI{schemas: make(map[string]any)}
		got, _ := json.Marshal(o.fieldSchema(tc.fd))
		if string(got) != tc.want {
			t.Errorf("%s: %s, want %s", tc.fd.FullName(), got, tc.want)
		}
	}
	o := &openAPI{schemas: make(map[string]any)}
	o.fieldSchema(field(&typepb.Field{}, "kind"))
	enum, _ := json.Marshal(o.schemas["google.protobuf.Field.Kind"])
	if want := `{"enum":["TYPE_UNKNOWN","TYPE_DOUBLE",`; len(enum) < len(want) || string(enum[:len(want)]) != want {
		t.Errorf("enum schema %s", enum)
	}
	for name, want := range map[protoreflect.FullName]string{
		"google.protobuf.Timestamp":  `{"format":"date-time","type":"string"}`,
		"google.protobuf.Duration":   `{"format":"duration","pattern":"^-?[0-9]+(\\.[0-9]{1,9})?s$","type":"string"}`,
		"google.protobuf.Int64Value": `{"pattern":"^-?[0-9]+$","type":["string","integer","null"]}`,
		"google.protobuf.Empty":      `{"additionalProperties":false,"type":"object"}`,
	} {
		got, _ := json.Marshal(wellKnownSchema(name))
		if string(got) != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}
