package testbed_test

import (
	"testing"

	"github.com/greenflow/greenflow/pkg/testbed"
)

// A testbed spec is a user's file: whatever it holds, ParseSpec returns a
// spec that validates, or an error — never a panic — and what it accepts
// asks for nodes of every role the overlay needs.
func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(specYAML))
	f.Add([]byte("testbed:\n  walltime: \"1:99\"\n"))
	f.Add([]byte("testbed:\n  nodes: {control: -1}\n"))
	f.Add([]byte("testbed: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := testbed.ParseSpec(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted a spec that does not validate: %v", err)
		}
		if s.Nodes[testbed.RoleControl] != 1 || s.Total() < 4 {
			t.Fatalf("accepted %v", s.Nodes)
		}
		if _, err := testbed.AssignRoles(s, make([]string, s.Total())); err != nil {
			t.Fatal(err)
		}
	})
}
