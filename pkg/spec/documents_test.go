package spec_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
)

// A spec is one document. Anything more is refused with a reason, never
// silently dropped; an empty trailing document loses nothing and is fine.
func TestASpecIsExactlyOneDocument(t *testing.T) {
	one := head + "spec: {repetitions: 2}\n"
	json := `{"apiVersion": "greenflow.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"}, "spec": {"repetitions": 2}}`
	flow := `{apiVersion: greenflow.dev/v1alpha1, kind: Experiment, metadata: {name: x}, spec: {repetitions: 2}}`
	for name, doc := range map[string]string{"yaml": one, "leading ---": "---\n" + one, "trailing ---": one + "---\n",
		"trailing ...": one + "...\n", "json": json, "json with spaces": "\n  " + json + "\n\n", "yaml flow": flow} {
		e, err := spec.Parse([]byte(doc), nil)
		require.NoError(t, err, name)
		require.Equal(t, 2, e.Spec.Repetitions, name)
	}
	for name, tc := range map[string]struct{ doc, want string }{
		"two yaml documents":   {one + "---\n" + one, "line 5: a second YAML document: a spec holds one experiment"},
		"a comment-only third": {one + "---\n" + one + "---\n# c\n", "line 5: a second YAML document"},
		"json then json":       {json + json, "a JSON spec must be a single value: 117 more bytes follow the first"},
		"json then text":       {json + "\nrm -rf", "a JSON spec must be a single value: 6 more bytes"},
		"flow then text":       {flow + " trailing", "not valid YAML after the first document"},
		"empty":                {"\n# nothing\n", "spec is empty"},
	} {
		_, err := spec.Parse([]byte(tc.doc), nil)
		require.ErrorContains(t, err, tc.want, name)
	}
}
