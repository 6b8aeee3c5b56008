package spec_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

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

// BenchmarkParse: the example spec, and one padded to the size limit.
func BenchmarkParse(b *testing.B) {
	example, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(b, err)
	padded := append(append([]byte{}, example...), "# "+strings.Repeat("x", spec.MaxBytes-len(example)-3)+"\n"...)
	for _, c := range []struct {
		name string
		doc  []byte
	}{{"example", example}, {"at-the-limit", padded}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := spec.Parse(c.doc, []string{"spec.repetitions=2"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Aliases and merge keys cannot make a small spec stand for exponentially
// many fields ("billion laughs"): it is refused with a problem, promptly.
func TestAliasAndMergeBombsAreRefused(t *testing.T) {
	bomb := func(merge func(prev int) string) []byte {
		var b strings.Builder
		b.WriteString(head + "spec:\n  sut:\n    params:\n      a0: &w0 {sensors: 1}\n")
		for i := 1; i <= 12; i++ {
			fmt.Fprintf(&b, "      a%d: &w%d {%s, periodMs: 1}\n", i, i, merge(i-1))
		}
		b.WriteString("  workload: *w12\n")
		return []byte(b.String())
	}
	cases := map[string]struct {
		doc  []byte
		want string
	}{
		"repeated merge keys": {bomb(func(prev int) string {
			return strings.TrimSuffix(strings.Repeat(fmt.Sprintf("<<: *w%d, ", prev), 10), ", ")
		}), "line 8: spec.workload.<<: given twice (first at line 8)"},
		"a merge list": {bomb(func(prev int) string {
			return "<<: [" + strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*w%d, ", prev), 10), ", ") + "]"
		}), "spec.workload.sensors: the document stands for more than 1048576 nodes through aliases and merges"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := spec.Parse(c.doc, nil)
			took := time.Since(start)
			require.ErrorContains(t, err, c.want)
			require.Less(t, took, 30*time.Second, "a 12-level bomb stands for 10^12 nodes: the walk must stop early")
			t.Logf("refused in %v: %.300s", took, err)
		})
	}
}

// A merge key of defaults is a plain YAML feature and keeps working.
func TestMergeKeysAreChecked(t *testing.T) {
	doc := head + "spec:\n  sut:\n    params: &p {a: \"1\"}\n  workload: &w {sensors: 7}\n  kafka: {<<: *w}\n"
	_, err := spec.Parse([]byte(doc), nil)
	require.ErrorContains(t, err, `line 7: spec.kafka.sensors: unknown field`)
	doc = head + "spec:\n  workload: &w {sensors: 7}\n  search: {<<: [{start: 100, max: 1000}], tolerance: 0.1}\n"
	e, err := spec.Parse([]byte(doc), nil)
	require.NoError(t, err)
	require.Equal(t, 1000.0, e.Spec.Search.Max)
}
