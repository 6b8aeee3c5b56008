package spec

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// setPath sets (creating mappings as needed) a scalar at path in a mapping node.
func setPath(n *yaml.Node, path []string, val string) error {
	_, err := setNode(n, path, 0, val)
	return err
}

// setNode sets path[i:] under n (the node at path[:i]) and returns the
// nodes it wrote: the new value, and the key and mappings it created, so
// a problem found in them is blamed on the --set argument, not on a line.
func setNode(n *yaml.Node, path []string, i int, val string) ([]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		if i == 0 {
			return nil, fmt.Errorf("the spec is not a mapping, so %s cannot be set in it", path[0])
		}
		return nil, fmt.Errorf("%s: not a mapping, so %s cannot be set inside it", strings.Join(path[:i], "."), path[i])
	}
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == path[i] {
			if i == len(path)-1 {
				n.Content[j+1] = &yaml.Node{Kind: yaml.ScalarNode, Value: val}
				return []*yaml.Node{n.Content[j+1]}, nil
			}
			return setNode(n.Content[j+1], path, i+1, val)
		}
	}
	child := &yaml.Node{Kind: yaml.ScalarNode, Value: val}
	if i < len(path)-1 {
		child = &yaml.Node{Kind: yaml.MappingNode}
		if _, err := setNode(child, path, i+1, val); err != nil {
			return nil, err
		}
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Value: path[i]}
	n.Content = append(n.Content, key, child)
	return []*yaml.Node{key, child}, nil
}

// With returns a copy of rc with factor values applied by path. Each value
// is decoded as the YAML scalar it would be in the document (so "10" is an
// int, "1s" a duration, "true" a bool), straight into the field the path
// names — no re-encoding of the whole config, so a 100,000-value sweep
// validates and expands in well under a second. Pointers and maps on the
// path are created when absent; an unknown field is an error, as in the
// document.
func (rc RunConfig) With(values map[string]string) (RunConfig, error) {
	if len(values) == 0 {
		return rc, nil
	}
	out := deepCopy(reflect.ValueOf(rc)).Interface().(RunConfig)
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := setField(reflect.ValueOf(&out).Elem(), strings.Split(k, "."), values[k]); err != nil {
			return rc, err
		}
	}
	return out, nil
}

// setField sets the field at path (YAML names) under v to the scalar val.
func setField(v reflect.Value, path []string, val string) error {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return setField(v.Elem(), path, val)
	case reflect.Struct:
		f, ok := fieldByYAMLName(v, path[0])
		if !ok {
			return fmt.Errorf("%s: %s", path[0], unknownField(path[0], structFields(v.Type())))
		}
		if len(path) == 1 {
			return decodeScalar(f, val)
		}
		return setField(f, path[1:], val)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("%s: cannot set a key of a mapping whose keys are not strings", path[0])
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		key := reflect.ValueOf(path[0]).Convert(v.Type().Key())
		elem := reflect.New(v.Type().Elem()).Elem()
		if cur := v.MapIndex(key); cur.IsValid() {
			elem.Set(cur)
		}
		var err error
		if len(path) == 1 {
			err = decodeScalar(elem, val)
		} else {
			err = setField(elem, path[1:], val)
		}
		if err != nil {
			return err
		}
		v.SetMapIndex(key, elem)
		return nil
	default:
		return fmt.Errorf("%s: cannot be set inside a field that takes %s (not a mapping)", path[0], expected(v.Type()))
	}
}

// fieldByYAMLName finds a struct field by its YAML name, looking into
// inline fields.
func fieldByYAMLName(v reflect.Value, name string) (reflect.Value, bool) {
	for _, f := range yamlFields(v.Type()) {
		if f.inline {
			if fv, ok := fieldByYAMLName(v.Field(f.index), name); ok {
				return fv, true
			}
			continue
		}
		tag := f.tag
		if tag == "" {
			tag = strings.ToLower(f.goName)
		}
		if tag == name {
			return v.Field(f.index), true
		}
	}
	return reflect.Value{}, false
}

// yamlField is an exported struct field as the YAML document sees it.
type yamlField struct {
	index  int
	goName string
	tag    string // the yaml tag's name, "" when it has none
	inline bool
}

// yamlFieldsOf caches yamlFields per type: validation walks every run
// config of a sweep (up to MaxRuns), and listing the fields anew for each
// struct of each was a third of its time.
var yamlFieldsOf sync.Map // reflect.Type → []yamlField

// yamlFields lists the exported fields of struct type t. The slice is
// shared: callers must not modify it.
func yamlFields(t reflect.Type) []yamlField {
	if f, ok := yamlFieldsOf.Load(t); ok {
		return f.([]yamlField)
	}
	var out []yamlField
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		out = append(out, yamlField{index: i, goName: sf.Name, tag: tag, inline: strings.Contains(opts, "inline")})
	}
	yamlFieldsOf.Store(t, out)
	return out
}

// decodeScalar decodes val as a plain YAML scalar into f, replacing what
// was there (null leaves the zero value, as a null in the document does).
func decodeScalar(f reflect.Value, val string) error {
	f.Set(reflect.Zero(f.Type()))
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: val}
	if err := n.Decode(f.Addr().Interface()); err != nil {
		if f.Kind() <= reflect.Complex128 || f.Kind() == reflect.String {
			return fmt.Errorf("expected %s, got %s", expected(f.Type()), describe(n))
		}
		return errors.New(cleanDecodeError(err))
	}
	if f.CanInt() || f.CanUint() {
		if msg := fractionProblem(n, f.Type()); msg != "" {
			return errors.New(msg)
		}
	}
	return nil
}

// deepCopy copies v, its pointers, maps and slices included, so a run's
// config shares nothing with the spec or with other runs.
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Type().Elem())
		n.Elem().Set(deepCopy(v.Elem()))
		return n
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			n.SetMapIndex(iter.Key(), deepCopy(iter.Value()))
		}
		return n
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(deepCopy(v.Index(i)))
		}
		return n
	case reflect.Struct:
		n := reflect.New(v.Type()).Elem()
		n.Set(v)
		for i := 0; i < v.NumField(); i++ {
			if n.Field(i).CanSet() {
				n.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return n
	default:
		return v
	}
}

// internalLine matches the "line N: " yaml.v3 puts before a decode error.
var internalLine = regexp.MustCompile(`^line \d+: `)
