package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problems is every validation problem found, each with its field path.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("%d problem(s) in experiment spec:\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// Parse reads a spec (YAML or JSON), applies defaults and the --set
// overrides (path=value), and validates it. On failure the error is Problems.
//
// The text must hold exactly one experiment: a second YAML document, or
// anything after a JSON value, is a problem — never silently dropped.
func Parse(data []byte, sets []string) (*Experiment, error) {
	root, err := oneDocument(data)
	if err != nil {
		return nil, err
	}
	var probs Problems
	for _, s := range sets {
		path, val, ok := strings.Cut(s, "=")
		if !ok || path == "" {
			probs = append(probs, fmt.Sprintf("--set %q: expected path=value", s))
			continue
		}
		if err := setPath(root.Content[0], strings.Split(path, "."), val); err != nil {
			probs = append(probs, fmt.Sprintf("--set %s: %v", path, err))
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	e := Default()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(&root); err != nil {
		return nil, Problems{fmt.Sprintf("re-encode spec: %v", err)}
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(e); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, Problems(te.Errors)
		}
		return nil, Problems{err.Error()}
	}
	if err := e.Validate(); err != nil {
		var probs Problems
		if errors.As(err, &probs) {
			return nil, withLines(root.Content[0], probs)
		}
		return nil, err
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

// withLines appends the spec line of each problem's field path, when the
// field is written in the document.
func withLines(root *yaml.Node, probs Problems) Problems {
	out := make(Problems, len(probs))
	for i, p := range probs {
		out[i] = p
		path, _, ok := strings.Cut(p, ": ")
		if !ok {
			continue
		}
		if n := lookup(root, path); n != nil && n.Line > 0 { // a --set value has no line
			out[i] = fmt.Sprintf("line %d: %s", n.Line, p)
		}
	}
	return out
}

// lookup finds the node at a dotted path with [i] indices, e.g.
// spec.factors[0].name; the deepest existing node is returned so a missing
// field points at its parent.
func lookup(n *yaml.Node, path string) *yaml.Node {
	var found *yaml.Node
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				idx = v
			}
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return found
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == name {
				next = n.Content[j+1]
				break
			}
		}
		if next == nil {
			return found
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return next
			}
			next = next.Content[idx]
		}
		n, found = next, next
	}
	return found
}
