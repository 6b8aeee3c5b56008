package events

import (
	"bytes"
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

// compileAll compiles every registered type's schema once. The schemas are
// embedded, so failure is a build defect; it is still reported, not panicked.
func compileAll() (map[key]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		entries, err := fs.ReadDir(schemas.Events, "events")
		if err != nil {
			compileErr = fmt.Errorf("read embedded event schemas: %w", err)
			return
		}
		for _, e := range entries {
			b, err := fs.ReadFile(schemas.Events, "events/"+e.Name())
			if err != nil {
				compileErr = fmt.Errorf("read schema %s: %w", e.Name(), err)
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				compileErr = fmt.Errorf("parse schema %s: %w", e.Name(), err)
				return
			}
			if err := c.AddResource(schemaBase+e.Name(), doc); err != nil {
				compileErr = fmt.Errorf("add schema %s: %w", e.Name(), err)
				return
			}
		}
		compiled = make(map[key]*jsonschema.Schema, len(registry))
		for k := range registry {
			s, err := c.Compile(schemaBase + SchemaName(k.t, k.v))
			if err != nil {
				compileErr = fmt.Errorf("compile schema for %s/v%d: %w", k.t, k.v, err)
				return
			}
			compiled[k] = s
		}
	})
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
