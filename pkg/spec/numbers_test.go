package spec_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
)

const head = "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\n"

// Degenerate ranges are refused at validation, by field and line, before
// anything is generated: each of these used to panic (makeslice) or hang.
func TestDegenerateRangesAreRejectedWithFieldAndLine(t *testing.T) {
	cases := []struct{ rng, want string }{
		{"{from: 1, to: 10, step: .nan}", "line 7: spec.factors[0].range.step: got NaN, expected a finite number"},
		{"{from: 1, to: 10, step: .inf}", "line 7: spec.factors[0].range.step: got +Inf, expected a finite number"},
		{"{from: 1, to: 10, step: -.inf}", "line 7: spec.factors[0].range.step: got -Inf, expected a finite number"},
		{"{from: .nan, to: 10, step: 1}", "line 7: spec.factors[0].range.from: got NaN, expected a finite number"},
		{"{from: 1, to: .inf, step: 1}", "line 7: spec.factors[0].range.to: got +Inf, expected a finite number"},
		{"{from: 1, to: 10, step: 0}", "line 7: spec.factors[0].range.step: got 0, expected a positive step"},
		{"{from: 1, to: 10, step: -1}", "line 7: spec.factors[0].range.step: got -1, expected a positive step"},
		{"{from: 10, to: 1, step: 1}", "line 7: spec.factors[0].range.to: got 1, expected at least from (10)"},
		{"{from: 1, to: 10, step: 1e-300}", "line 7: spec.factors[0].range.step: from 1 to 10 by 1e-300 yields more than 100000 values"},
		{"{from: 1, to: 10, step: 5e-324}", "yields more than 100000 values"},
		{"{from: -1.7e308, to: 1.7e308, step: 1}", "yields more than 100000 values"}, // the span overflows to +Inf
		{"{from: 1, to: 1000000, step: 1}", "yields more than 100000 values"},
		{"{from: 1e300, to: 1e300, step: 1}", "too small to change a value near 1e+300"},
	}
	for _, tc := range cases {
		doc := head + "spec:\n  factors:\n    - name: workload.ratePerSec\n      range: " + tc.rng + "\n"
		_, err := spec.Parse([]byte(doc), nil)
		require.ErrorContains(t, err, tc.want, tc.rng)
	}
}

// Factor.Expand, Count and Experiment.Expand refuse a bad range on their
// own, for specs that did not come through Parse.
func TestExpandRefusesBadRangesWithoutValidation(t *testing.T) {
	for _, r := range []spec.Range{{From: 1, To: 10, Step: nan()}, {From: 1, To: 10, Step: 1e-300}, {From: 1, To: 10, Step: 0},
		{From: -1.7e308, To: 1.7e308, Step: 1}} {
		f := spec.Factor{Name: "workload.ratePerSec", Range: &r}
		_, err := f.Expand()
		require.Error(t, err, "%+v", r)
		e := spec.Default()
		e.Metadata.Name = "x"
		e.Spec.Factors = []spec.Factor{f}
		_, err = e.Count()
		require.Error(t, err)
		_, err = e.Expand("x", 1)
		require.Error(t, err)
	}
}

// floatPaths lists the YAML path of every float64 field under t, so that a
// float added to the spec later is covered by the test below without
// anyone remembering to add it.
func floatPaths(t reflect.Type, prefix string) []string {
	var out []string
	switch t.Kind() {
	case reflect.Pointer:
		return floatPaths(t.Elem(), prefix)
	case reflect.Float32, reflect.Float64:
		return []string{prefix}
	case reflect.Struct:
		if t == reflect.TypeFor[spec.Range]() {
			return nil // ranges are under a list; the test above covers them
		}
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if strings.Contains(opts, "inline") {
				out = append(out, floatPaths(sf.Type, prefix)...)
				continue
			}
			p := name
			if prefix != "" {
				p = prefix + "." + name
			}
			out = append(out, floatPaths(sf.Type, p)...)
		}
	}
	return out
}

// nested writes path=value as nested YAML mappings under the head, and
// returns the document and the line of the value.
func nested(path, value string) (string, int) {
	parts := strings.Split(path, ".")
	var b strings.Builder
	b.WriteString(head)
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i == len(parts)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String(), 3 + len(parts)
}

// NaN and ±Inf are refused in every numeric field of the spec with the
// field's path and line: NaN compares false with every bound, so each
// range check would let it through.
func TestNonFiniteNumbersAreRejectedInEveryField(t *testing.T) {
	paths := floatPaths(reflect.TypeFor[spec.Experiment](), "")
	require.GreaterOrEqual(t, len(paths), 9, "found %v", paths)
	for _, want := range []string{"spec.workload.ratePerSec", "spec.workload.value", "spec.meters.model.idleWatts", "spec.meters.model.maxWatts",
		"spec.slos.lagTrendSlope", "spec.slos.minThroughputRatio", "spec.search.start", "spec.search.max", "spec.search.tolerance"} {
		require.Contains(t, paths, want)
	}
	for _, path := range paths {
		for _, v := range []struct{ yaml, shown string }{{".nan", "NaN"}, {".inf", "+Inf"}, {"-.inf", "-Inf"}} {
			doc, line := nested(path, v.yaml)
			_, err := spec.Parse([]byte(doc), nil)
			require.ErrorContains(t, err, fmt.Sprintf("line %d: %s: got %s, expected a finite number", line, path, v.shown), doc)
			// And through --set, which has no line.
			_, err = spec.Parse([]byte(head), []string{path + "=" + v.yaml})
			require.ErrorContains(t, err, fmt.Sprintf("%s: got %s, expected a finite number", path, v.shown))
		}
	}
}

// A factor may not smuggle NaN into a run's config either.
func TestNonFiniteFactorValuesAreRejected(t *testing.T) {
	for _, f := range []string{
		`{name: workload.ratePerSec, values: ["100", ".nan"]}`,
		`{name: meters.model.maxWatts, values: [".inf"]}`,
		`{name: workload.value, values: ["-.inf"]}`,
	} {
		doc := head + "spec:\n  factors:\n    - " + f + "\n"
		_, err := spec.Parse([]byte(doc), nil)
		require.ErrorContains(t, err, "line 6: spec.factors[0]: value", f)
		require.ErrorContains(t, err, "expected a finite number", f)
	}
	doc := head + "spec:\n  include:\n    - {workload.value: .nan}\n"
	_, err := spec.Parse([]byte(doc), nil)
	require.ErrorContains(t, err, "spec.include[0]")
	require.ErrorContains(t, err, "expected a finite number")
}

// No spec may expand beyond MaxRuns, --yes or not, whichever way it
// reaches the scheduler (Parse is what the scheduler's consumer calls).
func TestSweepsBeyondMaxRunsAreRejectedEvenWithYes(t *testing.T) {
	doc := head + `spec:
  factors:
    - {name: workload.sensors, range: {from: 1, to: 1000, step: 1}}
    - {name: kafka.partitions, range: {from: 1, to: 200, step: 1}}
`
	_, err := spec.Parse([]byte(doc), nil)
	require.ErrorContains(t, err, "line 6: spec.factors: the sweep expands to 200000 runs")
	_, err = spec.Prepare([]byte(doc), nil, true)
	require.Error(t, err)
	// Right at the confirmation threshold it is a question of --yes only.
	ok := head + "spec:\n  factors:\n    - {name: workload.sensors, range: {from: 1, to: 20000, step: 1}}\n"
	_, err = spec.Prepare([]byte(ok), nil, false)
	require.ErrorIs(t, err, spec.ErrTooManyRuns)
	p, err := spec.Prepare([]byte(ok), nil, true)
	require.NoError(t, err)
	require.Equal(t, 20000, p.Runs)
}

// Sizes that would make a load generator allocate without bound are refused.
func TestWorkloadSizesAreBounded(t *testing.T) {
	_, err := spec.Parse([]byte(head), []string{"spec.workload.sensors=100000000000"})
	require.ErrorContains(t, err, "spec.workload.sensors: got 100000000000")
	_, err = spec.Parse([]byte(head), []string{"spec.workload.ratePerSec=1e300"})
	require.ErrorContains(t, err, "spec.workload.ratePerSec: got 1e+300")
	_, err = spec.Parse([]byte(head), []string{"spec.search.start=1", "spec.search.max=1e300", "spec.search.tolerance=0.05"})
	require.ErrorContains(t, err, "spec.search.max: got 1e+300")
}

func nan() float64 {
	var z float64
	return z / z
}

// BenchmarkValidateLargestRange measures validating (and counting) a
// factor with the most values a range may have: every value's run config
// is built and checked.
func BenchmarkValidateLargestRange(b *testing.B) {
	doc := []byte(head + "spec:\n  factors:\n    - {name: workload.sensors, range: {from: 1, to: 99999, step: 1}}\n")
	for b.Loop() {
		if _, err := spec.Prepare(doc, nil, true); err != nil {
			b.Fatal(err)
		}
	}
}

// The sweep's size is checked before each value's config is built (which
// costs a config per value), and a grid too large to enumerate is never
// enumerated: these specs are refused at once, not after seconds of work
// or gigabytes of combinations.
func TestOversizedSweepsAreRefusedBeforeTheWork(t *testing.T) {
	var b strings.Builder
	b.WriteString(head + "spec:\n  factors:\n")
	for _, name := range []string{"workload.sensors", "kafka.partitions", "workload.periodMs", "workload.schemaId", "meters.model.maxWatts"} {
		fmt.Fprintf(&b, "    - {name: %s, range: {from: 1, to: 99999, step: 1}}\n", name)
	}
	b.WriteString("  exclude:\n    - {workload.sensors: '1'}\n")
	_, err := spec.Parse([]byte(b.String()), nil)
	require.ErrorContains(t, err, "more than the 100000 an experiment may have")
	// With one factor broken, the rest is still bounded ("at least").
	doc := strings.Replace(b.String(), "name: workload.sensors, range: {from: 1", "name: workload.sensors, range: {from: .nan", 1)
	_, err = spec.Parse([]byte(doc), nil)
	require.ErrorContains(t, err, "spec.factors[0].range.from: got NaN")
	require.ErrorContains(t, err, "expands to at least 100001 runs")
}

// The sensor bound comes from the load generator's memory estimate: the
// last count that fits the budget is accepted, the next is refused with the
// field, the value, the limit and the estimate; 3,000,000,000 (which used to
// end in "fatal error: out of memory") is refused the same way. A sensor
// rate beyond one record a microsecond, a factor value past the bound, a
// period or a load longer than a day, more than 10,000 partitions and more
// than 1,000 replicas are refused too.
func TestSensorBoundFromMemoryEstimate(t *testing.T) {
	require.LessOrEqual(t, spec.LoadGeneratorBytes(spec.MaxSensors), int64(spec.LoadGeneratorMemoryBudget))
	require.Greater(t, spec.LoadGeneratorBytes(spec.MaxSensors+1), int64(spec.LoadGeneratorMemoryBudget))
	_, err := spec.Parse([]byte(head), []string{fmt.Sprintf("spec.workload.sensors=%d", spec.MaxSensors)})
	require.NoError(t, err)
	_, err = spec.Parse([]byte(head), []string{fmt.Sprintf("spec.workload.sensors=%d", spec.MaxSensors+1)})
	require.ErrorContains(t, err, fmt.Sprintf("spec.workload.sensors: got %d, expected at most %d: a load generator would need 4.0 GiB for it "+
		"(2 × key bytes + 28 B per sensor + 256 MiB), over its 4 GiB budget", spec.MaxSensors+1, spec.MaxSensors))
	_, err = spec.Parse([]byte(head), []string{"spec.workload.sensors=3000000000"})
	require.ErrorContains(t, err, fmt.Sprintf("spec.workload.sensors: got 3000000000, expected at most %d: a load generator would need 143.5 GiB", spec.MaxSensors))
	_, err = spec.Parse([]byte(head), []string{"spec.workload.sensors=10", "spec.workload.ratePerSec=20000000"})
	require.ErrorContains(t, err, "spec.workload.ratePerSec: got 2e+07 for 10 sensors, expected at most 1e+07 msg/s")
	doc := head + "spec:\n  factors:\n    - {name: workload.sensors, values: [\"100\", \"3000000000\"]}\n"
	_, err = spec.Parse([]byte(doc), nil)
	require.ErrorContains(t, err, "workload.sensors: got 3000000000, expected at most")
	_, err = spec.Parse([]byte(head), []string{"spec.workload.periodMs=86400001"})
	require.ErrorContains(t, err, "spec.workload.periodMs: got 86400001, expected at most 86400000 (24h0m0s: every sensor sends once a period)")
	_, err = spec.Parse([]byte(head), []string{"spec.kafka.partitions=10001"})
	require.ErrorContains(t, err, "spec.kafka.partitions: got 10001, expected 1 to 10000")
	kube := head + "spec:\n  sut:\n    template: uc3-flink\n    backend: kubernetes\n    kubernetes: {image: x, replicas: 1001}\n"
	_, err = spec.Parse([]byte(kube), nil)
	require.ErrorContains(t, err, "spec.sut.kubernetes.replicas: got 1001, expected 1 to 1000 (0 means 1)")
	_, err = spec.Parse([]byte(head), []string{"spec.phases.warmup=1h", "spec.phases.measure=24h"})
	require.ErrorContains(t, err, "spec.phases.measure: got 24h0m0s with warmup 1h0m0s, expected a load (warmup + measure) of at most 24h0m0s")
}

// The offered rate is bounded however it is written: 8×10⁷ sensors every
// millisecond (8×10¹⁰ msg/s) passed while ratePerSec alone was capped.
func TestOfferedRateFromSensorsAndPeriodIsBounded(t *testing.T) {
	_, err := spec.Parse([]byte(head), []string{"spec.workload.sensors=80000000", "spec.workload.periodMs=1"})
	require.ErrorContains(t, err, "spec.workload.sensors: 80000000 sensors every 1 ms (workload.periodMs) offer 8e+10 msg/s, expected at most 1e+09 msg/s")
	_, err = spec.Parse([]byte(head), []string{"spec.workload.sensors=1000000", "spec.workload.periodMs=1"})
	require.NoError(t, err, "10⁹ msg/s is the bound itself")
}

// The lag warm-up is counted from the load's start; one that leaves
// nothing of the measured window is refused, naming the window. Left
// unstated, the fit starts with the window (the default warm-up is 0).
func TestLagWarmupMustLeaveSomeOfTheWindow(t *testing.T) {
	set := []string{"spec.phases.warmup=3s", "spec.phases.measure=12s"}
	_, err := spec.Parse([]byte(head), append(set, "spec.slos.lagWarmup=1h"))
	require.ErrorContains(t, err, "spec.slos.lagWarmup: got 1h0m0s, expected less than warmup + measure (3s + 12s = 15s)")
	_, err = spec.Parse([]byte(head), append(set, "spec.slos.lagWarmup=15s"))
	require.ErrorContains(t, err, "spec.slos.lagWarmup: got 15s")
	_, err = spec.Parse([]byte(head), append(set, "spec.slos.lagWarmup=-1s"))
	require.ErrorContains(t, err, "spec.slos.lagWarmup: got -1s, expected zero or more")
	e, err := spec.Parse([]byte(head), append(set, "spec.slos.lagWarmup=10s"))
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, e.Spec.SLOs.LagWarmup.Duration)
	e, err = spec.Parse([]byte(head), set)
	require.NoError(t, err)
	require.Zero(t, e.Spec.SLOs.LagWarmup.Duration, "unstated, the lag fit starts at the window's start")
}

// The meters' interval is bounded by the window it samples, and the
// model's wattages by a node's plausible draw.
func TestMetersIntervalAndModelAreBounded(t *testing.T) {
	_, err := spec.Parse([]byte(head), []string{"spec.phases.measure=12s", "spec.meters.interval=1h"})
	require.ErrorContains(t, err, "spec.meters.interval: got 1h0m0s, expected at most the measured window (phases.measure 12s) or the default 1s")
	_, err = spec.Parse([]byte(head), []string{"spec.meters.model.idleWatts=1e9", "spec.meters.model.maxWatts=2e9"})
	require.ErrorContains(t, err, "spec.meters.model: idleWatts 1e+09, maxWatts 2e+09, platformWatts 0: expected each at most 10000 W")
	_, err = spec.Parse([]byte(head), []string{"spec.meters.model.maxWattsPerVCPU=500"})
	require.ErrorContains(t, err, "maxWattsPerVCPU 500: expected each at most 100 W")
	_, err = spec.Parse([]byte(head), []string{"spec.phases.measure=12s", "spec.meters.interval=12s", "spec.meters.model.idleWatts=100", "spec.meters.model.maxWatts=400"})
	require.NoError(t, err)
}
