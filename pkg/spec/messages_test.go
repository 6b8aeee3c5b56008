package spec_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
)

// exampleWith is examples/uc3-local.yaml with its line "    sensors: 500"
// (line 16) replaced.
func exampleWith(t *testing.T, sensorsLine string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	require.Equal(t, "    sensors: 500", lines[15], "line 16 of the example moved")
	lines[15] = sensorsLine
	return []byte(strings.Join(lines, "\n"))
}

// Every problem a user can make in a spec's text or its --set arguments
// names the field path and where it was written: the line, or the --set
// argument (a --set value has no line in the file). No Go type names.
func TestProblemsNameTheFieldAndWhereItWasWritten(t *testing.T) {
	example, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(t, err)
	misspelt := head + "spec:\n  workload:\n    sensors: 10\n  repetitons: 3\n"
	cases := []struct {
		name string
		doc  []byte
		sets []string
		want []string
	}{
		{"huge integer", exampleWith(t, "    sensors: 1e300"), nil,
			[]string{"line 16: spec.workload.sensors: expected a whole number, got `1e300`"}},
		{"infinite integer", exampleWith(t, "    sensors: .inf"), nil,
			[]string{"line 16: spec.workload.sensors: expected a whole number, got `.inf`"}},
		{"fraction in an integer", exampleWith(t, "    sensors: 1.5"), nil,
			[]string{"line 16: spec.workload.sensors: expected a whole number, got `1.5`"}},
		{"list for an integer", exampleWith(t, "    sensors: [1, 2]"), nil,
			[]string{"line 16: spec.workload.sensors: expected a whole number, got a list"}},
		{"misspelt field", []byte(misspelt), nil,
			[]string{`line 7: spec.repetitons: unknown field (did you mean "repetitions"?)`}},
		{"field given twice", []byte(head + "spec:\n  repetitions: 2\n  repetitions: 3\n"), nil,
			[]string{"line 6: spec.repetitions: given twice (first at line 5)"}},
		{"bad duration", []byte(head + "spec:\n  phases:\n    measure: soon\n"), nil,
			[]string{`line 6: spec.phases.measure: "soon": expected a duration such as 30s`}},
		{"--set of an unknown field", example, []string{"spec.nonexistent.x=1"},
			[]string{`--set spec.nonexistent.x=1: spec.nonexistent: unknown field`}},
		{"--set of a misspelt field", example, []string{"spec.workload.sensorz=10"},
			[]string{`--set spec.workload.sensorz=10: spec.workload.sensorz: unknown field (did you mean "sensors"?)`}},
		{"--set NaN", example, []string{"spec.workload.value=NaN"},
			[]string{"--set spec.workload.value=NaN: spec.workload.value: expected a finite number, got `NaN`"}},
		{"--set .nan", example, []string{"spec.workload.value=.nan"},
			[]string{"--set spec.workload.value=.nan: spec.workload.value: got NaN"}},
		{"--set out of range", example, []string{"spec.workload.sensors=0"},
			[]string{"--set spec.workload.sensors=0: spec.workload.sensors: got 0"}},
		{"--set inside a number", example, []string{"spec.workload.sensors.x=1"},
			[]string{"--set spec.workload.sensors.x=1: spec.workload.sensors: not a mapping"}},
		{"--set without =", example, []string{"spec.workload.sensors"},
			[]string{`--set "spec.workload.sensors": expected path=value`}},
		{"every --set problem at once", example, []string{"spec.nonexistent.x=1", "spec.workload.value=NaN", "spec.repetitions=0"},
			[]string{"--set spec.nonexistent.x=1: spec.nonexistent: unknown field",
				"--set spec.workload.value=NaN: spec.workload.value: expected a finite number",
				"--set spec.repetitions=0: spec.repetitions: got 0"}},
		{"text and --set problems together", exampleWith(t, "    sensors: 1e300"), []string{"spec.workload.value=NaN"},
			[]string{"line 16: spec.workload.sensors: expected a whole number", "--set spec.workload.value=NaN: spec.workload.value"}},
		{"unknown factor path", []byte(head + "spec:\n  factors:\n    - {name: workload.sensorz, values: [\"1\"]}\n"), nil,
			[]string{`line 6: spec.factors[0]: value "1": sensorz: unknown field (did you mean "sensors"?)`}},
		{"fraction as a factor value", []byte(head + "spec:\n  factors:\n    - {name: workload.sensors, values: [\"1.5\"]}\n"), nil,
			[]string{"line 6: spec.factors[0]: value \"1.5\": expected a whole number, got `1.5`"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := spec.Parse(c.doc, c.sets)
			require.Error(t, err)
			var probs spec.Problems
			require.True(t, errors.As(err, &probs), "%T: %v", err, err)
			require.Len(t, probs, len(c.want), "every problem once:\n%v", err)
			for _, w := range c.want {
				require.True(t, slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, w) }),
					"no problem says %q:\n%v", w, err)
			}
			for _, goName := range []string{"spec.Spec", "spec.Workload", "int64", "float64", "!!float", "!!str", "cannot unmarshal", "line 1:"} {
				require.NotContains(t, err.Error(), goName, "a user reads field paths, not Go types")
			}
		})
	}
}

// A spec over MaxBytes is refused by parsing itself, with its size and the
// limit — so validate, submit, HTTP, NATS, the bus and triggers all refuse
// it — and one at the limit (padded with a comment) is accepted.
func TestSpecsOverMaxBytesAreRefusedWithSizeAndLimit(t *testing.T) {
	valid, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(t, err)
	pad := func(total int) []byte {
		b := append([]byte{}, valid...)
		b = append(b, "# "...)
		b = append(b, strings.Repeat("x", total-len(b)-1)...)
		b = append(b, '\n')
		require.Equal(t, total, len(b))
		return b
	}
	oneMB := pad(1 << 20)
	_, err = spec.Parse(oneMB, nil)
	require.ErrorIs(t, err, spec.ErrTooLarge)
	want := fmt.Sprintf("spec too large: the spec is %d bytes, more than the %d bytes (512 KiB) allowed", len(oneMB), spec.MaxBytes)
	require.EqualError(t, err, want)
	_, err = spec.Prepare(oneMB, nil, true)
	require.EqualError(t, err, want)

	over := pad(spec.MaxBytes + 1)
	_, err = spec.Parse(over, nil)
	require.ErrorIs(t, err, spec.ErrTooLarge)

	at := pad(spec.MaxBytes)
	p, err := spec.Prepare(at, nil, false)
	require.NoError(t, err)
	require.Equal(t, 2, p.Runs)
}

// Prepare refuses a spec whose resolved form (what experiment.submit
// carries and the scheduler parses again) would be over MaxBytes, so no
// accepted submission is refused later by the scheduler.
func TestResolvedSpecOverMaxBytesIsRefusedBeforeSubmission(t *testing.T) {
	// Flow-style JSON grows when written back as block YAML.
	var vals []string
	for i, size := 0, 0; size < spec.MaxBytes-2000; i++ {
		vals = append(vals, fmt.Sprintf(`"%d"`, i+1))
		size += len(vals[i]) + 1
	}
	doc := `{"apiVersion":"greenflow.dev/v1alpha1","kind":"Experiment","metadata":{"name":"x"},` +
		`"spec":{"factors":[{"name":"workload.value","values":[` + strings.Join(vals, ",") + `]}]}}`
	require.LessOrEqual(t, len(doc), spec.MaxBytes)
	_, err := spec.Prepare([]byte(doc), nil, true)
	require.ErrorIs(t, err, spec.ErrTooLarge)
	require.Contains(t, err.Error(), "the resolved spec (defaults and --set applied) is ")
	require.Contains(t, err.Error(), fmt.Sprintf("more than the %d bytes (512 KiB) allowed", spec.MaxBytes))
}
