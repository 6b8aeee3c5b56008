package analyzer_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// lagSeries is one partition's lag: a 0 sampled as the load started
// (t0 - 3 s, before the window), then nothing until 1.5 s into the window
// (a sampler that fell behind on a busy machine) and a sample every second
// after it, of value f(seconds into the window).
func lagSeries(f func(sec float64) float64) map[string][]store.Point {
	pts := []store.Point{{TsMs: t0 - 2990, Value: 0}}
	for ms := int64(1500); ms <= 10_000; ms += 1000 {
		pts = append(pts, store.Point{TsMs: t0 + ms, Value: f(float64(ms) / 1000)})
	}
	return map[string][]store.Point{`{"partition":"0"}`: pts}
}

// TestLagTrendVerdicts fits known lag series over a run whose load started
// with a 3 s warm-up phase before the 10 s window: only samples inside the
// window after the SLO's warm-up count, and the SLO is the spec's.
func TestLagTrendVerdicts(t *testing.T) {
	t.Parallel()
	specSLO := analyzer.LagSLO{Threshold: 2000, Warmup: 3 * time.Second, FromSpec: true}
	for _, tc := range []struct {
		name      string
		lag       func(sec float64) float64
		slo       analyzer.LagSLO
		slope     float64
		ok        bool
		threshold float64
		fromSpec  float64
		fitStartS float64
	}{
		// Before: the 0 sampled before the load was the fit's first point
		// (the latest value at the window start), so a flat lag of 5000
		// gave a slope near 1000 msg/s, and a flat lag of 20,000 (a higher
		// rate) failed the SLO.
		{name: "flat lag meets the SLO", lag: func(float64) float64 { return 20_000 }, slo: specSLO, slope: 0, ok: true, threshold: 2000,
			fromSpec: 1},
		{name: "growing lag fails it", lag: func(s float64) float64 { return 1000 + 3000*s }, slo: specSLO, slope: 3000, threshold: 2000,
			fromSpec: 1},
		{name: "falling lag meets it", lag: func(s float64) float64 { return 9000 - 500*s }, slo: specSLO, slope: -500, ok: true,
			threshold: 2000, fromSpec: 1},
		{name: "the spec's threshold, not the flag's", lag: func(s float64) float64 { return 500 * s },
			slo: analyzer.LagSLO{Threshold: 100, Warmup: 3 * time.Second, FromSpec: true}, slope: 500, threshold: 100, fromSpec: 1},
		{name: "no spec SLO: the analyzer's flags", lag: func(s float64) float64 { return 2500 * s }, slope: 2500, threshold: 2000},
		{name: "a warm-up reaching into the window drops the ramp-up", lag: func(s float64) float64 {
			if s < 5 {
				return 4000 * s // the consumer catching up
			}
			return 20_000
		}, slo: analyzer.LagSLO{Threshold: 2000, Warmup: 8 * time.Second, FromSpec: true}, slope: 0, ok: true, threshold: 2000, fromSpec: 1,
			fitStartS: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := richInputs()
			in.Run.Phases = []events.Phase{{Name: events.RunStateWarmup, StartMs: t0 - 3000, EndMs: t0},
				{Name: events.RunStateMeasuring, StartMs: t0, EndMs: t0 + 10_000}}
			in.ConsumerLag, in.LagSLO = lagSeries(tc.lag), tc.slo
			rows, _ := analyzer.Compute(in, analyzer.Default())
			r := index(rows)
			require.InDelta(t, tc.slope, r.v(t, "run", "", results.LagTrendSlope), 1e-6)
			require.Equal(t, b2f(tc.ok), r.v(t, "run", "", results.LagSLOOK))
			require.Equal(t, tc.threshold, r.v(t, "run", "", results.LagSLOThreshold))
			require.Equal(t, tc.fromSpec, r.v(t, "run", "", results.LagSLOFromSpec))
			require.Equal(t, tc.fitStartS, r.v(t, "run", "", results.LagTrendFitStartS))
		})
	}
}

// TestLagSLOFromStoredSpec analyses a run of an experiment whose stored spec
// is examples/uc3-capacity.yaml with its lag threshold lowered to 50 msg/s:
// the fixture's lag grows by 80 msg/s, which the flag's 2000 would pass.
func TestLagSLOFromStoredSpec(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	text, err := os.ReadFile("../../../../examples/uc3-capacity.yaml")
	require.NoError(t, err)
	e, err := spec.Parse(text, []string{"spec.slos.lagTrendSlope=50"})
	require.NoError(t, err)
	resolved, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, st.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "uc3-capacity", Spec: string(resolved)}))
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 80)
	res, _, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	r := index(res)
	require.InDelta(t, 80.0, r.v(t, "run", "", results.LagTrendSlope), 1e-9)
	require.Equal(t, 50.0, r.v(t, "run", "", results.LagSLOThreshold))
	require.Equal(t, 0.0, r.v(t, "run", "", results.LagSLOOK))
	require.Equal(t, 1.0, r.v(t, "run", "", results.LagSLOFromSpec))
	// The run has no phases: its load is taken to start with the window,
	// so the spec's 3 s warm-up starts the fit 3 s into it.
	require.Equal(t, 3.0, r.v(t, "run", "", results.LagTrendFitStartS))
}

// TestLagVerdictThreeWay fits known lag series of 11 samples a second apart
// over a 10 s window against a 2000 msg/s threshold: the verdict is
// sustained or not sustained only where the slope's Theil–Sen interval lies
// wholly on one side of the threshold, and unresolved (flagged) where it
// contains it.
func TestLagVerdictThreeWay(t *testing.T) {
	t.Parallel()
	const (
		sustained    = "sustained"
		notSustained = "not sustained"
		unresolved   = "unresolved"
	)
	for _, tc := range []struct {
		name    string
		lag     func(i int) float64
		verdict string
		slope   float64
	}{
		// Recorded by the capacity search of examples/uc3-capacity.yaml at
		// 220,000 msg/s: flat near 90,000 but for two samples a second's
		// load higher (a consumer commit that came late). Least squares
		// gave a slope of 222 ± 8920 (standard error), unresolved; the
		// median of pairwise slopes is −294 with a 95 % interval of
		// [−660, 1914].
		{"flat with late-commit spikes", func(i int) float64 {
			return []float64{92400, 91520, 92400, 311959, 90200, 91519, 90640, 310640, 89319, 88879, 101684}[i]
		}, sustained, -294},
		// Commits every 3 s at 1000 msg/s: a 3000-message sawtooth on a
		// flat lag; its interval is [−600, 750].
		{"small sawtooth", func(i int) float64 { return 50_000 + 1500*float64(i%3) }, sustained, 0},
		// The same shape ten times higher (10,000 msg/s): the interval
		// [−2000, 2500] contains the threshold — a 10 s window of it
		// cannot tell a flat lag from one growing by 2000 msg/s.
		{"large sawtooth", func(i int) float64 { return 50_000 + 10_000*float64(i%3) }, unresolved, 0},
		{"steady growth", func(i int) float64 { return 1000 + 5000*float64(i) }, notSustained, 5000},
		{"falling", func(i int) float64 { return 90_000 - 3000*float64(i) }, sustained, -3000},
		// Growing at the threshold's rate, ±3000 alternately: the interval
		// is [1143, 2857].
		{"growth near the threshold", func(i int) float64 { return 2000*float64(i) + 3000*float64(1-2*(i%2)) }, unresolved, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := richInputs()
			var pts []store.Point
			for i := range 11 {
				pts = append(pts, store.Point{TsMs: t0 + int64(i)*1000, Value: tc.lag(i)})
			}
			in.ConsumerLag = map[string][]store.Point{`{"partition":"0"}`: pts}
			in.LagSLO = analyzer.LagSLO{Threshold: 2000, FromSpec: true}
			rows, sum := analyzer.Compute(in, analyzer.Default())
			r := index(rows)
			slope := r.v(t, "run", "", results.LagTrendSlope)
			low, high := r.v(t, "run", "", results.LagTrendSlopeCILow), r.v(t, "run", "", results.LagTrendSlopeCIHigh)
			require.InDelta(t, tc.slope, slope, 0.5)
			require.LessOrEqual(t, low, slope)
			require.GreaterOrEqual(t, high, slope)
			require.Equal(t, b2f(slope < 2000), r.v(t, "run", "", results.LagSLOOK), "lag_slo_ok is the point estimate's verdict")
			switch tc.verdict {
			case sustained:
				require.Less(t, high, 2000.0)
			case notSustained:
				require.GreaterOrEqual(t, low, 2000.0)
			case unresolved:
				require.True(t, low < 2000 && 2000 <= high, "interval [%v, %v]", low, high)
			}
			if tc.verdict == unresolved {
				require.Contains(t, sum.Flags, results.FlagLagVerdictUnresolved)
				require.Equal(t, 1.0, r.v(t, "run", "", results.FlagMetric(results.FlagLagVerdictUnresolved)))
			} else {
				require.NotContains(t, sum.Flags, results.FlagLagVerdictUnresolved)
			}
		})
	}
}

// TestLagVerdictTooFewSamples: three samples cannot bound a slope at 95 %,
// so however clean they are the verdict is unresolved and the interval's
// rows are absent (unbounded).
func TestLagVerdictTooFewSamples(t *testing.T) {
	t.Parallel()
	in := richInputs()
	in.ConsumerLag = map[string][]store.Point{`{"partition":"0"}`: {{TsMs: t0 + 8000, Value: 100}, {TsMs: t0 + 9000, Value: 100},
		{TsMs: t0 + 10_000, Value: 100}}}
	in.LagSLO = analyzer.LagSLO{Threshold: 2000, FromSpec: true}
	rows, sum := analyzer.Compute(in, analyzer.Default())
	r := index(rows)
	require.Equal(t, 0.0, r.v(t, "run", "", results.LagTrendSlope))
	require.False(t, r.has("run", "", results.LagTrendSlopeCILow))
	require.False(t, r.has("run", "", results.LagTrendSlopeCIHigh))
	require.Contains(t, sum.Flags, results.FlagLagVerdictUnresolved)
}

// TestLagSLOWithTheDefaultWarmup: a new user's spec (3 s warm-up, 12 s
// window, no slos section) gets a lag verdict fitted from the window's
// start. With the old default (lagWarmup 60 s from the load's start) the
// fit started after the window and no lag row said why; a stored spec that
// still asks for it is analysed with the lag_not_evaluated flag.
func TestLagSLOWithTheDefaultWarmup(t *testing.T) {
	e, err := spec.Parse([]byte("apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\nspec:\n  phases: {warmup: 3s, measure: 12s}\n"), nil)
	require.NoError(t, err)
	resolved, err := json.Marshal(e)
	require.NoError(t, err)
	analyze := func(t *testing.T, specJSON string) (resultIndex, events.RunAnalyzed) {
		a, st, ctx := parallelAnalyzer(t)
		require.NoError(t, st.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "demo", Spec: specJSON}))
		res, sum, err := a.Analyze(ctx, runFixture(t, st, "e1-r0000", "c1", 0, 30, 80))
		require.NoError(t, err)
		return index(res), sum
	}
	t.Run("default", func(t *testing.T) {
		r, sum := analyze(t, string(resolved))
		require.Equal(t, 0.0, r.v(t, "run", "", results.LagTrendFitStartS))
		require.InDelta(t, 80.0, r.v(t, "run", "", results.LagTrendSlope), 1e-9)
		require.Equal(t, 1.0, r.v(t, "run", "", results.LagSLOOK))
		require.NotContains(t, sum.Flags, results.FlagLagNotEvaluated)
	})
	t.Run("a warm-up past the window", func(t *testing.T) {
		r, sum := analyze(t, `{"spec":{"slos":{"lagTrendSlope":2000,"lagWarmup":"1m0s"}}}`)
		require.False(t, r.has("run", "", results.LagSLOOK), "no verdict from no samples")
		require.Contains(t, sum.Flags, results.FlagLagNotEvaluated)
		require.Equal(t, 1.0, r.v(t, "run", "", results.FlagMetric(results.FlagLagNotEvaluated)))
	})
}
