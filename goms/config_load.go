package goms

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envPrefix starts the names of the environment variables LoadConfig reads.
// The rest of the name is the key, upper case, with "__" between levels:
// GOMS_SHUTDOWN_TIMEOUT is shutdown_timeout, GOMS_LISTENERS__GRPC__ADDRESS
// is the address of the listener named grpc.
const envPrefix = "GOMS_"

// LoadConfig builds a Config from layers, each overriding the ones before:
//
//  1. defaults, a YAML document (nil for none), such as a program's
//     built-in listeners;
//  2. the YAML file at path (none when path is "");
//  3. the process's environment variables that start with "GOMS_";
//  4. the overrides in set, each "key=value" with a dotted key, such as
//     "listeners.grpc.address=127.0.0.1:42001" — what a -set flag gives.
//
// Keys are the YAML keys of Config. An element of a list of named
// entries, such as listeners, is addressed by its name; naming one that
// does not exist adds it. A value is YAML: "10s", "[a, b]" or
// "{name: x}". Mappings merge key by key, lists of named entries entry by
// entry, other lists are replaced.
//
// Loading is strict: an unknown key, a value of the wrong type or two
// listeners with one name is an error that names the key and where it
// came from (file and line, variable, or override). Fields that only Go
// can set, such as Logger and Plugins, are left for the caller.
func LoadConfig(defaults []byte, path string, set ...string) (Config, error) {
	var cfg Config
	origins := make(map[*yaml.Node]string)
	root, err := parseLayer(defaults, "defaults", origins)
	if err != nil {
		return cfg, err
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("goms: config: %w", err)
		}
		file, err := parseLayer(data, path, origins)
		if err != nil {
			return cfg, err
		}
		merge(root, file)
	}
	env := os.Environ()
	slices.Sort(env)
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		key, ok := strings.CutPrefix(name, envPrefix)
		if !ok || key == "" {
			continue
		}
		path := strings.Split(strings.ToLower(key), "__")
		if err := override(root, path, value, "environment variable "+name, origins); err != nil {
			return cfg, err
		}
	}
	for _, kv := range set {
		key, value, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return cfg, fmt.Errorf(`goms: config: override %q: want "key=value"`, kv)
		}
		if err := override(root, strings.Split(key, "."), value, "override "+kv, origins); err != nil {
			return cfg, err
		}
	}
	src := configSource{origins: origins}
	if err := src.checkKeys(root, reflect.TypeFor[Config](), ""); err != nil {
		return cfg, err
	}
	if err := root.Decode(&cfg); err != nil {
		return cfg, src.decodeError(root, err)
	}
	return cfg, nil
}

// parseLayer parses one YAML document into a mapping node, recording
// where each node comes from and refusing two listeners with one name.
func parseLayer(data []byte, name string, origins map[*yaml.Node]string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("goms: config %s: %w", name, err)
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("goms: config %s:%d: the document must be a mapping of keys", name, root.Line)
	}
	var mark func(n *yaml.Node)
	mark = func(n *yaml.Node) {
		origins[n] = name + ":" + strconv.Itoa(n.Line)
		for _, c := range n.Content {
			mark(c)
		}
	}
	mark(root)
	if err := (configSource{origins: origins}).checkNames(root); err != nil {
		return nil, err
	}
	return root, nil
}

// namedLists are the lists whose entries are addressed by a key of theirs.
var namedLists = map[string]string{"listeners": "name", "remotes": "name"}

// merge copies src into dst: mappings key by key, lists of named entries
// entry by entry, anything else replaced.
func merge(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		key, value := src.Content[i], src.Content[i+1]
		j := mappingIndex(dst, key.Value)
		if j < 0 {
			dst.Content = append(dst.Content, key, value)
			continue
		}
		old := dst.Content[j+1]
		switch nameKey, named := namedLists[key.Value]; {
		case old.Kind == yaml.MappingNode && value.Kind == yaml.MappingNode:
			merge(old, value)
		case named && old.Kind == yaml.SequenceNode && value.Kind == yaml.SequenceNode:
			for _, entry := range value.Content {
				if prev := namedEntry(old, nameKey, scalarAt(entry, nameKey)); prev != nil && entry.Kind == yaml.MappingNode {
					merge(prev, entry)
				} else {
					old.Content = append(old.Content, entry)
				}
			}
		default:
			dst.Content[j+1] = value
		}
	}
}

// override sets the value at path in root, creating what is missing.
func override(root *yaml.Node, path []string, value, origin string, origins map[*yaml.Node]string) error {
	var parsed yaml.Node
	if err := yaml.Unmarshal([]byte(value), &parsed); err != nil {
		return fmt.Errorf("goms: config: %s: value %q is not YAML: %w", origin, value, err)
	}
	leaf := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
	if len(parsed.Content) > 0 {
		leaf = parsed.Content[0]
	}
	markOrigin(leaf, origin, origins)
	node := root
	for i, seg := range path {
		if seg == "" {
			return fmt.Errorf("goms: config: %s: empty key segment", origin)
		}
		last := i == len(path)-1
		if node.Kind != yaml.MappingNode {
			return fmt.Errorf("goms: config: %s: %s is not a mapping", origin, strings.Join(path[:i], "."))
		}
		j := mappingIndex(node, seg)
		if last {
			if j >= 0 {
				node.Content[j+1] = leaf
			} else {
				node.Content = append(node.Content, scalar(seg, origin, origins), leaf)
			}
			return nil
		}
		if j < 0 {
			next := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if _, named := namedLists[seg]; named {
				next = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			}
			node.Content = append(node.Content, scalar(seg, origin, origins), next)
			j = len(node.Content) - 2
		}
		child := node.Content[j+1]
		if nameKey, named := namedLists[seg]; named && child.Kind == yaml.SequenceNode {
			name := path[i+1]
			entry := namedEntry(child, nameKey, name)
			if entry == nil {
				entry = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
					scalar(nameKey, origin, origins), scalar(name, origin, origins),
				}}
				child.Content = append(child.Content, entry)
			}
			if i+1 == len(path)-1 {
				return fmt.Errorf("goms: config: %s: %s.%s names an entry; set one of its keys, such as %s.%s.address", origin, seg, name, seg, name)
			}
			// Skip the name segment: the rest of the path is in the entry.
			return override(entry, path[i+2:], value, origin, origins)
		}
		node = child
	}
	return nil
}

// markOrigin records where an overriding node came from, for errors.
func markOrigin(n *yaml.Node, origin string, origins map[*yaml.Node]string) {
	origins[n] = origin
	for _, c := range n.Content {
		markOrigin(c, origin, origins)
	}
}

func scalar(value, origin string, origins map[*yaml.Node]string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	origins[n] = origin
	return n
}

// mappingIndex returns the index of key's node in a mapping, or -1.
func mappingIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

func scalarAt(m *yaml.Node, key string) string {
	if m.Kind != yaml.MappingNode {
		return ""
	}
	if j := mappingIndex(m, key); j >= 0 && m.Content[j+1].Kind == yaml.ScalarNode {
		return m.Content[j+1].Value
	}
	return ""
}

func namedEntry(seq *yaml.Node, nameKey, name string) *yaml.Node {
	for _, e := range seq.Content {
		if name != "" && scalarAt(e, nameKey) == name {
			return e
		}
	}
	return nil
}

// configSource describes where nodes came from, for error messages.
type configSource struct {
	origins map[*yaml.Node]string
}

// where names a node's origin: "file.yaml:12", "defaults:3",
// "environment variable GOMS_X", or "override a=b".
func (s configSource) where(n *yaml.Node) string {
	if o, ok := s.origins[n]; ok {
		return o
	}
	return "line " + strconv.Itoa(n.Line)
}

// checkKeys reports the first key of n that t has no field for.
func (s configSource) checkKeys(n *yaml.Node, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode || t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return nil // a type error, which Decode reports
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			f, ok := fields[key.Value]
			if !ok {
				names := make([]string, 0, len(fields))
				for name := range fields {
					names = append(names, name)
				}
				slices.Sort(names)
				return fmt.Errorf("goms: config %s: unknown key %q (%s takes %s)",
					s.where(key), join(at, key.Value), orRoot(at), strings.Join(names, ", "))
			}
			if err := s.checkKeys(n.Content[i+1], f, join(at, key.Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, e := range n.Content {
				// Entries of named lists are named as overrides name them.
				elem := fmt.Sprintf("%s[%d]", at, i)
				if nameKey, named := namedLists[at]; named && scalarAt(e, nameKey) != "" {
					elem = join(at, scalarAt(e, nameKey))
				}
				if err := s.checkKeys(e, t.Elem(), elem); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := s.checkKeys(n.Content[i+1], t.Elem(), join(at, n.Content[i].Value)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var textUnmarshaler = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()

// yamlFields maps the YAML keys of a struct to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if strings.Contains(tag, ",inline") {
			maps := yamlFields(f.Type)
			for k, v := range maps {
				fields[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

func orRoot(at string) string {
	if at == "" {
		return "the configuration"
	}
	return at
}

// decodeError names the origin of the value that failed to decode: the
// line numbers YAML reports cannot tell the defaults, the file and the
// overrides apart, so the values are decoded one by one to find it.
func (s configSource) decodeError(root *yaml.Node, err error) error {
	bad, badErr := s.badValue(root, reflect.TypeFor[Config](), "")
	if bad == nil {
		return fmt.Errorf("goms: config: %w", err)
	}
	return fmt.Errorf("goms: config %s: %s", s.where(bad), badErr)
}

// badValue returns the first node under n that does not decode into t,
// with its key and the reason.
func (s configSource) badValue(n *yaml.Node, t reflect.Type, at string) (*yaml.Node, string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	composite := t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshaler) ||
		t.Kind() == reflect.Slice || t.Kind() == reflect.Map
	if !composite || n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return n, fmt.Sprintf("%s: %s", orRoot(at), yamlReason(err))
		}
		return nil, ""
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if f, ok := fields[n.Content[i].Value]; ok {
				if bad, why := s.badValue(n.Content[i+1], f, join(at, n.Content[i].Value)); bad != nil {
					return bad, why
				}
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			if bad, why := s.badValue(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); bad != nil {
				return bad, why
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if bad, why := s.badValue(n.Content[i+1], t.Elem(), join(at, n.Content[i].Value)); bad != nil {
				return bad, why
			}
		}
	default:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return n, fmt.Sprintf("%s: %s", orRoot(at), yamlReason(err))
		}
	}
	return nil, ""
}

// yamlReason returns what a YAML decoding error says, without the line
// number of a document the user never wrote.
func yamlReason(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
			return rest
		}
		return msg
	}
	return err.Error()
}

// checkNames reports two entries of a named list with one name in one
// layer, naming both places.
func (s configSource) checkNames(root *yaml.Node) error {
	for list, nameKey := range namedLists {
		j := mappingIndex(root, list)
		if j < 0 || root.Content[j+1].Kind != yaml.SequenceNode {
			continue
		}
		seen := make(map[string]*yaml.Node)
		for _, e := range root.Content[j+1].Content {
			k := mappingIndex(e, nameKey)
			if k < 0 {
				continue
			}
			n := e.Content[k+1]
			if prev, dup := seen[n.Value]; dup {
				return fmt.Errorf("goms: config %s: %s: %s %q is already used at %s", s.where(n), list, nameKey, n.Value, s.where(prev))
			}
			seen[n.Value] = n
		}
	}
	return nil
}
