package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problems is every validation problem found, each with its field path.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("%d problem(s) in experiment spec:\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// ErrTooLarge is what a *TooLargeError is (errors.Is).
var ErrTooLarge = errors.New("spec too large")

// TooLargeError refuses a spec over MaxBytes, naming its size and the limit.
type TooLargeError struct {
	What string // "the spec", "the body", "the resolved spec"
	Size int    // bytes; 0 when only "more than the limit" is known
}

func (e *TooLargeError) Error() string {
	if e.Size <= 0 {
		return fmt.Sprintf("%v: %s is more than the %d bytes (%d KiB) allowed", ErrTooLarge, e.What, MaxBytes, MaxBytes>>10)
	}
	return fmt.Sprintf("%v: %s is %d bytes, more than the %d bytes (%d KiB) allowed", ErrTooLarge, e.What, e.Size, MaxBytes, MaxBytes>>10)
}

// Is makes errors.Is(err, ErrTooLarge) hold.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Parse reads a spec (YAML or JSON), applies defaults and the --set
// overrides (path=value), and validates it. On failure the error is
// Problems — every problem found, each with its field path and where it was
// written (the line, or the --set argument) — or a *TooLargeError when the
// text is over MaxBytes. Every way into the platform (CLI submit and
// validate, HTTP, NATS request-reply, experiment.submit, triggers) parses
// here, so each refuses the same specs with the same words.
//
// The text must hold exactly one experiment: a second YAML document, or
// anything after a JSON value, is a problem — never silently dropped.
func Parse(data []byte, sets []string) (*Experiment, error) {
	if len(data) > MaxBytes {
		return nil, &TooLargeError{What: "the spec", Size: len(data)}
	}
	root, err := oneDocument(data)
	if err != nil {
		return nil, err
	}
	doc := root.Content[0]
	o := origin{}
	var probs Problems
	for _, s := range sets {
		path, val, ok := strings.Cut(s, "=")
		if !ok || path == "" {
			probs = append(probs, fmt.Sprintf("--set %q: expected path=value", s))
			continue
		}
		wrote, err := setNode(doc, strings.Split(path, "."), 0, val)
		if err != nil {
			probs = append(probs, fmt.Sprintf("--set %s: %v", s, err))
			continue
		}
		for _, n := range wrote {
			o.mark(n, s)
		}
	}
	// The shape check names unknown fields and mistyped values with their
	// path and line (or --set argument); what is left to decode then
	// cannot fail on them, and Validate checks the values.
	shape := shapeReport{o: o}
	shape.check(doc, reflect.TypeOf(Experiment{}), "")
	probs = append(probs, shape.probs...)
	e := Default()
	if err := doc.Decode(e); err != nil && len(shape.probs) == 0 {
		// Not expected after the shape check; reported rather than lost.
		probs = append(probs, cleanDecodeError(err))
	}
	if err := e.Validate(); err != nil {
		var vp Problems
		if !errors.As(err, &vp) {
			vp = Problems{err.Error()}
		}
		for _, p := range withLines(doc, o, vp) {
			if !shape.covers(p) {
				probs = append(probs, p.text)
			}
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return e, nil
}

// oneDocument parses data as a single YAML (or JSON) document.
func oneDocument(data []byte) (yaml.Node, error) {
	var root yaml.Node
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		// JSON, or YAML in flow style. When the first value is JSON,
		// nothing but white space may follow it.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var first json.RawMessage
		if dec.Decode(&first) == nil {
			if rest := bytes.TrimSpace(trimmed[dec.InputOffset():]); len(rest) > 0 {
				return root, Problems{fmt.Sprintf("a JSON spec must be a single value: %d more bytes follow the first (%q...)",
					len(rest), truncate(string(rest), 20))}
			}
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return root, Problems{"spec is empty"}
		}
		return root, Problems{fmt.Sprintf("not valid YAML: %v", err)}
	}
	if len(root.Content) == 0 {
		return root, Problems{"spec is empty"}
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return root, Problems{fmt.Sprintf("not valid YAML after the first document: %v", err)}
		}
		if len(next.Content) == 1 && next.Content[0].Kind == yaml.ScalarNode && next.Content[0].ShortTag() == "!!null" {
			continue // an empty document ("---" at the end) holds nothing to lose
		}
		return root, Problems{fmt.Sprintf("line %d: a second YAML document: a spec holds one experiment; submit each document on its own", next.Line)}
	}
	return root, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// located is a validation problem with its field path and its rendering.
type located struct{ path, text string }

// withLines prefixes each problem with where its field was written: its
// line in the document, or the --set argument that set it.
func withLines(root *yaml.Node, o origin, probs Problems) []located {
	out := make([]located, len(probs))
	for i, p := range probs {
		out[i].text = p
		path, _, ok := strings.Cut(p, ": ")
		if !ok {
			continue
		}
		out[i].path = path
		n, _ := Locate(root, path)
		if w := o.where(n); w != "" {
			out[i].text = w + ": " + p
		}
	}
	return out
}

// Locate finds the node at a dotted path of mapping keys with [i]
// indices, e.g. spec.factors[0].name. whole says the document writes the
// whole path; when it does not, node is the deepest part it writes (nil
// for none), so that a problem with a missing field points at its parent.
func Locate(root *yaml.Node, path string) (node *yaml.Node, whole bool) {
	n := root
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				idx = v
			}
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return node, false
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == name {
				next = n.Content[j+1]
				break
			}
		}
		if next == nil {
			return node, false
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return next, false
			}
			next = next.Content[idx]
		}
		n, node = next, next
	}
	return node, true
}
