package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/greenflow/greenflow/schemas"
)

const schemaBase = "https://greenflow.dev/schemas/events/"

var (
	compileOnce sync.Once
	compiled    map[key]*jsonschema.Schema
	compileErr  error
)

// EmbeddedSchemas is the contents of schemas/events built into the binary,
// what Decode validates against and Check verifies the registry with.
func EmbeddedSchemas() fs.FS {
	sub, _ := fs.Sub(schemas.Events, "events") // fails only for an invalid path; "events" is valid
	return sub
}

// compile compiles the schema of every given (type, version) from the
// files of fsys (a flat directory, shared definitions included).
func compile(fsys fs.FS, keys []key) (map[key]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	names, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return nil, fmt.Errorf("list event schemas: %w", err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", n, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", n, err)
		}
		if err := c.AddResource(schemaBase+n, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", n, err)
		}
	}
	out := make(map[key]*jsonschema.Schema, len(keys))
	for _, k := range keys {
		s, err := c.Compile(schemaBase + SchemaName(k.t, k.v))
		if err != nil {
			return nil, fmt.Errorf("compile schema for %s/v%d: %w", k.t, k.v, err)
		}
		out[k] = s
	}
	return out, nil
}

// compileAll compiles every registered version's schema once. The schemas
// are embedded, so failure is a build defect (Check's test catches it); it
// is still reported, not panicked.
func compileAll() (map[key]*jsonschema.Schema, error) {
	compileOnce.Do(func() { compiled, compileErr = compile(EmbeddedSchemas(), keysOf(entries)) })
	return compiled, compileErr
}

// Validate checks data against the JSON Schema of (t, version). The error
// names the failing field path.
func Validate(t Type, version int, data []byte) error {
	all, err := compileAll()
	if err != nil {
		return err
	}
	s, ok := all[key{t, version}]
	if !ok {
		_, err := New(t, version)
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s/v%d: body is not JSON: %w", t, version, err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%s/v%d: %w", t, version, err)
	}
	return nil
}

// Decode validates data against the schema of (t, version) and unmarshals it
// into the type's Go struct. The error names the offending field when
// validation fails.
func Decode(t Type, version int, data []byte) (Message, error) {
	m, err := New(t, version)
	if err != nil {
		return nil, err
	}
	if err := Validate(t, version, data); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode %s/v%d: %w", t, version, err)
	}
	return m, nil
}
