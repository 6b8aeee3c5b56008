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
	"github.com/greenflow/greenflow/pkg/testenv"
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
	st, ctx := testenv.ParallelStore(t)
	a := newAnalyzer(t, st)
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

// TestLagVerdictWithinNoise: a lag series recorded by the capacity search
// of examples/uc3-capacity.yaml at 220,000 msg/s on this machine — flat
// near 90,000 but for two samples a second's load higher (a consumer commit
// that came late) — has a least-squares slope whose standard error is
// several times the 2000 msg/s threshold: the verdict is flagged as not
// resolved by the window. A clean flat series is not.
func TestLagVerdictWithinNoise(t *testing.T) {
	t.Parallel()
	measured := []float64{92400, 91520, 92400, 311959, 90200, 91519, 90640, 310640, 89319, 88879, 101684}
	for _, tc := range []struct {
		name       string
		lag        []float64
		unresolved bool
	}{
		{"spiky lag at 220k msg/s", measured, true},
		{"clean flat lag", []float64{90000, 90000, 90000, 90000, 90000, 90000, 90000, 90000, 90000, 90000, 90000}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := richInputs()
			var pts []store.Point
			for k, v := range tc.lag {
				pts = append(pts, store.Point{TsMs: t0 + int64(k)*1000, Value: v})
			}
			in.ConsumerLag = map[string][]store.Point{`{"partition":"0"}`: pts}
			in.LagSLO = analyzer.LagSLO{Threshold: 2000, FromSpec: true}
			rows, sum := analyzer.Compute(in, analyzer.Default())
			r := index(rows)
			se := r.v(t, "run", "", results.LagTrendSlopeStdErr)
			if tc.unresolved {
				require.Greater(t, se, 4*2000.0, "the noise dwarfs the threshold")
				require.Contains(t, sum.Flags, results.FlagLagVerdictUnresolved)
			} else {
				require.Zero(t, se)
				require.NotContains(t, sum.Flags, results.FlagLagVerdictUnresolved)
			}
		})
	}
}
