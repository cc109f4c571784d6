package goms

import (
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The buf.validate field rules, read through reflection: goms does not
// link protovalidate's code; the rules are there when the program's
// generated code, which imports it, is.
var fieldRulesExtension = sync.OnceValue(func() protoreflect.ExtensionType {
	xt, err := protoregistry.GlobalTypes.FindExtensionByName("buf.validate.field")
	if err != nil {
		return nil
	}
	return xt
})

// fieldRules returns the buf.validate.FieldRules of a field, or nil.
func fieldRules(fd protoreflect.FieldDescriptor) protoreflect.Message {
	xt := fieldRulesExtension()
	if xt == nil || fd.Options() == nil {
		return nil
	}
	opts := fd.Options().ProtoReflect()
	if !opts.Has(xt.TypeDescriptor()) {
		return nil
	}
	return opts.Get(xt.TypeDescriptor()).Message()
}

// sub returns the message field name of m when it is set, or nil.
func sub(m protoreflect.Message, name string) protoreflect.Message {
	if m == nil {
		return nil
	}
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || fd.Message() == nil || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message()
}

// value returns the scalar field name of m when it is set.
func value(m protoreflect.Message, name string) (protoreflect.Value, protoreflect.FieldDescriptor, bool) {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || !m.Has(fd) {
		return protoreflect.Value{}, nil, false
	}
	return m.Get(fd), fd, true
}

// validateRequired reports whether buf.validate requires the field.
func validateRequired(fd protoreflect.FieldDescriptor) bool {
	rules := fieldRules(fd)
	if rules == nil {
		return false
	}
	v, _, ok := value(rules, "required")
	return ok && v.Bool()
}

// withRules adds to a field's schema the buf.validate rules that JSON
// Schema can say: lengths, patterns, bounds, formats, constants and sets
// of values, and list and map sizes. Others, such as CEL expressions, are
// checked by the server only.
func withRules(schema map[string]any, fd protoreflect.FieldDescriptor) map[string]any {
	rules := fieldRules(fd)
	if rules == nil {
		return schema
	}
	switch {
	case fd.IsMap():
		if r := sub(rules, "map"); r != nil {
			copyRule(schema, "minProperties", r, "min_pairs")
			copyRule(schema, "maxProperties", r, "max_pairs")
		}
	case fd.IsList():
		if r := sub(rules, "repeated"); r != nil {
			copyRule(schema, "minItems", r, "min_items")
			copyRule(schema, "maxItems", r, "max_items")
			copyRule(schema, "uniqueItems", r, "unique")
			if items, ok := schema["items"].(map[string]any); ok {
				if ir := sub(r, "items"); ir != nil {
					schema["items"] = scalarRules(clone(items), ir)
				}
			}
		}
	default:
		scalarRules(schema, rules)
	}
	return schema
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var numberRules = []string{"int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64", "float", "double"}

// scalarRules adds the rules of a single value.
func scalarRules(schema map[string]any, rules protoreflect.Message) map[string]any {
	if r := sub(rules, "string"); r != nil {
		copyRule(schema, "minLength", r, "min_len")
		copyRule(schema, "maxLength", r, "max_len")
		copyRule(schema, "minLength", r, "len")
		copyRule(schema, "maxLength", r, "len")
		copyRule(schema, "pattern", r, "pattern")
		copyRule(schema, "const", r, "const")
		copyRule(schema, "enum", r, "in")
		for _, format := range []string{"email", "uuid", "uri", "hostname", "ipv4", "ipv6"} {
			if v, _, ok := value(r, format); ok && v.Bool() {
				schema["format"] = format
			}
		}
	}
	if r := sub(rules, "bytes"); r != nil {
		// Base64 text: 4 characters for every 3 bytes.
		if v, _, ok := value(r, "min_len"); ok {
			schema["minLength"] = (v.Uint() + 2) / 3 * 4
		}
	}
	for _, kind := range numberRules {
		r := sub(rules, kind)
		if r == nil {
			continue
		}
		copyRule(schema, "minimum", r, "gte")
		copyRule(schema, "exclusiveMinimum", r, "gt")
		copyRule(schema, "maximum", r, "lte")
		copyRule(schema, "exclusiveMaximum", r, "lt")
		copyRule(schema, "const", r, "const")
		copyRule(schema, "enum", r, "in")
	}
	return schema
}

// copyRule sets schema[key] to the value of the rule field name of r, when
// it is set.
func copyRule(schema map[string]any, key string, r protoreflect.Message, name string) {
	v, fd, ok := value(r, name)
	if !ok {
		return
	}
	if fd.IsList() {
		list := v.List()
		if list.Len() == 0 {
			return
		}
		values := make([]any, list.Len())
		for i := range list.Len() {
			values[i] = jsonValue(list.Get(i), fd.Kind())
		}
		schema[key] = values
		return
	}
	schema[key] = jsonValue(v, fd.Kind())
}

// jsonValue returns a rule's value as JSON Schema states it.
func jsonValue(v protoreflect.Value, kind protoreflect.Kind) any {
	switch kind {
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float()
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind, protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return v.Int()
	}
	return v.Interface()
}
