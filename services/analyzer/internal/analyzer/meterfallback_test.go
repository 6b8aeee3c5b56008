package analyzer_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// A run that asked `meters.source: rapl` and had a node measured by the
// model (the collectors' run_meters row: asked rapl, meter model) is
// flagged meter_fallback, with its result row; a node measured by RAPL as
// asked, a run asking auto, and another run's fallback are not.
func TestMeterFallbackFlagsTheRun(t *testing.T) {
	t.Parallel()
	in := richInputs()
	run := in.Run.RunID
	in.Meters = []store.RunMeter{ // richInputs' fallback replaced
		{RunID: run, Node: "n1", AskedSource: "rapl", Meter: "rapl"},
		{RunID: run, Node: "n2", AskedSource: "auto", Meter: "model", Estimated: true},
		{RunID: "e-r0001", Node: "n1", AskedSource: "rapl", Meter: "model", Estimated: true},
	}
	rows, sum := analyzer.Compute(in, analyzer.Default())
	require.NotContains(t, sum.Flags, results.FlagMeterFallback)
	require.False(t, index(rows).has("run", "", results.FlagMetric(results.FlagMeterFallback)))

	in.Meters = append(in.Meters, store.RunMeter{RunID: run, Node: "n2", AskedSource: "rapl", Meter: "model", Estimated: true,
		Note: "asked rapl, measured by model (source local/n2): no readable RAPL on this node, so its figures are estimated"},
		store.RunMeter{RunID: run, Node: "n2", AskedSource: "rapl", Meter: "model", Estimated: true, IntervalMs: 500})
	rows, sum = analyzer.Compute(in, analyzer.Default())
	require.Contains(t, sum.Flags, results.FlagMeterFallback)
	require.IsIncreasing(t, sum.Flags)
	n := 0
	for _, r := range rows {
		if r.Metric == results.FlagMetric(results.FlagMeterFallback) {
			n++
			require.Equal(t, results.ScopeRun, r.Scope)
			require.Equal(t, 1.0, r.Value)
			require.Equal(t, results.UnitBool, r.Unit)
		}
	}
	require.Equal(t, 1, n, "one row however many nodes fell back")
}

// Through the store: the collector's run_meters row (asked rapl, meter
// model) makes the analysis of the run flagged meter_fallback, with its
// row; before the row exists the run is not flagged.
func TestMeterFallbackFromRunMeters(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 80)
	_, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	require.NotContains(t, sum.Flags, results.FlagMeterFallback)

	require.NoError(t, st.InsertRunMeters(ctx, []store.RunMeter{{ExperimentID: m.ExperimentID, RunID: m.RunID, Node: "n1", SourceID: "local/n1",
		TsMs: m.MeasureStartMs - 5000, AskedIntervalMs: 1000, IntervalMs: 1000, AskedSource: "rapl", Meter: "model", Estimated: true,
		Label: "estimated", Note: "asked rapl, measured by model (source local/n1): no readable RAPL on this node, so its figures are estimated"}}))
	res, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	require.Contains(t, sum.Flags, results.FlagMeterFallback)
	index(res).expect(t, []want{{"run", "", results.FlagMetric(results.FlagMeterFallback), 1, 0}})
}
