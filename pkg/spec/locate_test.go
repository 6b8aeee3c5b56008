package spec_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/spec"
)

// Locate finds a written path (with indices) and says so; for a path not
// written it points at the deepest part that is, so that a problem with a
// missing field can name its parent's line.
func TestLocate(t *testing.T) {
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(`spec:
  sut:
    template: uc3
  factors:
    - name: workload.sensors
      values: ["1"]
`), &root))
	for _, tc := range []struct {
		path  string
		line  int // 0: nil
		whole bool
	}{
		{"spec.sut.template", 3, true},
		{"spec.factors[0].name", 5, true},
		{"spec.sut.kubernetes.manifest", 3, false}, // its parent: spec.sut's mapping
		{"spec.factors[3].name", 5, false},         // the sequence
		{"metadata.name", 0, false},
	} {
		n, whole := spec.Locate(root.Content[0], tc.path)
		require.Equal(t, tc.whole, whole, tc.path)
		if tc.line == 0 {
			require.Nil(t, n, tc.path)
			continue
		}
		require.NotNil(t, n, tc.path)
		require.Equal(t, tc.line, n.Line, tc.path)
	}
}
