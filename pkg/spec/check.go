package spec

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The shape check walks the user's node tree against the Go types before
// anything is decoded, so a misspelt field or a value of the wrong type is
// reported with its field path (spec.workload.sensors) and where it was
// written: its line in the document, or the --set argument that put it
// there. yaml.v3's own errors name neither the path nor the argument (only
// a line, and Go type names), and a strict decode stops at the first
// unknown field.

// origin says where each node that is not from the document came from:
// the --set argument that created it.
type origin map[*yaml.Node]string

// where is the location of node n for a problem: "line N", "--set arg",
// or "" when unknown.
func (o origin) where(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	if arg, ok := o[n]; ok {
		return "--set " + arg
	}
	if n.Line > 0 {
		return fmt.Sprintf("line %d", n.Line)
	}
	return ""
}

// locate renders a problem about path as "<where>: <path>: msg".
func (o origin) locate(n *yaml.Node, path, msg string) string {
	s := msg
	if path != "" {
		s = path + ": " + msg
	}
	if w := o.where(n); w != "" {
		s = w + ": " + s
	}
	return s
}

// mark records every node under n as written by the --set argument arg.
func (o origin) mark(n *yaml.Node, arg string) {
	if n == nil {
		return
	}
	o[n] = arg
	for _, c := range n.Content {
		o.mark(c, arg)
	}
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// shapeReport collects the problems of the shape check and the field
// paths they are about.
type shapeReport struct {
	o      origin
	probs  Problems
	paths  []string
	visits int // nodes checked, aliases and merges followed
}

// maxShapeVisits bounds the check's walk: aliases and merge keys can make a
// small document stand for exponentially many nodes ("billion laughs").
// A spec of MaxBytes holds far fewer nodes than this.
const maxShapeVisits = 1 << 20

func (r *shapeReport) add(n *yaml.Node, path, msg string) {
	r.probs = append(r.probs, r.o.locate(n, path, msg))
	r.paths = append(r.paths, path)
}

// covers reports whether validation problem p is about a field the shape
// check already refused (its value there is only the default).
func (r *shapeReport) covers(p located) bool {
	if p.path == "" {
		return false
	}
	for _, bad := range r.paths {
		if p.path == bad || strings.HasPrefix(p.path, bad+".") || strings.HasPrefix(p.path, bad+"[") {
			return true
		}
	}
	return false
}

// check reports every place where the tree under n does not fit type t:
// unknown fields (with the nearest known name), keys given twice, lists
// where a mapping belongs and the like, and scalars that do not decode
// into their field. path is the field path of n ("" at the root).
func (r *shapeReport) check(n *yaml.Node, t reflect.Type, path string) {
	if n == nil || r.visits > maxShapeVisits {
		return
	}
	if r.visits++; r.visits > maxShapeVisits {
		r.add(n, path, fmt.Sprintf("the document stands for more than %d nodes through aliases and merges", maxShapeVisits))
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	if isNull(n) {
		return // null leaves the default, as the decoder does
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			r.add(n, path, cleanDecodeError(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		r.check(n, t.Elem(), path)
	case reflect.Interface:
		// any value is accepted
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			r.add(n, path, "expected a mapping of fields, got "+describe(n))
			return
		}
		fields := structFields(t)
		r.entries(n, t, path, false, func(k, v *yaml.Node, p string) {
			ft, ok := fields[k.Value]
			if !ok {
				r.add(k, p, unknownField(k.Value, fields))
				return
			}
			r.check(v, ft, p)
		})
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			r.add(n, path, "expected a mapping, got "+describe(n))
			return
		}
		r.entries(n, t, path, true, func(_, v *yaml.Node, p string) { r.check(v, t.Elem(), p) })
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			r.add(n, path, "expected a list, got "+describe(n))
			return
		}
		for i, c := range n.Content {
			r.check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			r.add(n, path, "expected "+expected(t)+", got "+describe(n))
			return
		}
		if msg := scalarProblem(n, t); msg != "" {
			r.add(n, path, msg)
		}
	}
}

// entries calls f with each key, value and path of the mapping n (of type
// t) once: a key given twice is reported, a merge key's values are checked
// as part of the mapping, and with plainKeys (a map's) a key that is not a
// scalar is reported.
func (r *shapeReport) entries(n *yaml.Node, t reflect.Type, path string, plainKeys bool, f func(k, v *yaml.Node, p string)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if plainKeys && k.Kind != yaml.ScalarNode {
			r.add(k, path, "expected a plain key, got "+describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			r.add(k, p, "given twice (first at "+orUnknown(r.o.where(first))+")")
			continue
		}
		seen[k.Value] = k
		if !r.merge(k, v, t, path) {
			f(k, v, p)
		}
	}
}

// merge checks the value of a merge key ("<<: *defaults" or a list of
// them) as part of the mapping at path, of type t; false when k is not one.
func (r *shapeReport) merge(k, v *yaml.Node, t reflect.Type, path string) bool {
	if k.Kind != yaml.ScalarNode || k.Value != "<<" || k.ShortTag() != "!!merge" {
		return false
	}
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, c := range v.Content {
			r.check(c, t, path)
		}
		return true
	}
	r.check(v, t, path)
	return true
}

// scalarProblem decodes the scalar n into a fresh value of type t and says
// what was expected when it does not fit.
func scalarProblem(n *yaml.Node, t reflect.Type) string {
	v := reflect.New(t)
	if err := n.Decode(v.Interface()); err != nil {
		return fmt.Sprintf("expected %s, got %s", expected(t), describe(n))
	}
	return fractionProblem(n, t)
}

// fractionProblem refuses a fraction decoded into an integer field: yaml.v3
// truncates it (1.5 → 1) without a word, and a fraction in a count is a
// mistake.
func fractionProblem(n *yaml.Node, t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.ShortTag() == "!!float" {
			if f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64); err == nil && f != math.Trunc(f) {
				return fmt.Sprintf("expected %s, got %s", expected(t), describe(n))
			}
		}
	}
	return ""
}

// expected names what a field of type t takes, in the user's words.
func expected(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if bits := t.Bits(); bits < 64 {
			return fmt.Sprintf("a whole number from %d to %d", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
		}
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if bits := t.Bits(); bits < 64 {
			return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<bits-1)
		}
		return "a whole number, zero or more"
	case reflect.Float32, reflect.Float64:
		return "a finite number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	default:
		return "a single value"
	}
}

// describe says what node n is, quoting a scalar.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "`" + truncate(n.Value, 40) + "`"
	default:
		return "nothing"
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orUnknown(s string) string {
	if s == "" {
		return "another place"
	}
	return s
}

// cleanDecodeError turns yaml.v3's decode error of one node into its
// message alone: no "yaml: unmarshal errors:" header, no line (the caller
// gives the location).
func cleanDecodeError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = internalLine.ReplaceAllString(m, "")
		}
		return strings.Join(msgs, "; ")
	}
	return internalLine.ReplaceAllString(err.Error(), "")
}

// structFields maps the YAML names of struct type t (inline fields
// flattened) to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for _, f := range yamlFields(t) {
			sf := t.Field(f.index)
			if f.inline {
				add(sf.Type)
				continue
			}
			name := f.tag
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.goName)
			}
			out[name] = sf.Type
		}
	}
	add(t)
	return out
}

// unknownField says a field is not known, with the closest known name
// when one is near (a typo), else the names there are.
func unknownField(name string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	return UnknownName(name, names)
}

// UnknownName says name is not among names, with the closest when one is
// near (a typo), else the names there are; the testbed spec's check says
// it the same way.
func UnknownName(name string, names []string) string {
	best, bestD := "", math.MaxInt
	for _, k := range names {
		d := editDistance(strings.ToLower(name), strings.ToLower(k))
		if d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if best != "" && bestD <= max(2, len(best)/3) {
		return fmt.Sprintf("unknown field (did you mean %q?)", best)
	}
	sort.Strings(names)
	return "unknown field, expected one of " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
