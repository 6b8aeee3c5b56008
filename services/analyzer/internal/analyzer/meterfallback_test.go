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
