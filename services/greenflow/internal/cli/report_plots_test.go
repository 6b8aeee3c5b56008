package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestSmallComponentsGetTheirOwnScale: a 0.2 W SUT beside a 7 W node goes
// to a plot of its own; components of one size stay together.
func TestSmallComponentsGetTheirOwnScale(t *testing.T) {
	node := series{Name: "node n1", Y: []float64{6.5, 7}}
	rest := series{Name: "unattributed", Y: []float64{6, 6.6}}
	sut := series{Name: "sut", Y: []float64{0.1, 0.2}}
	big, small := splitByScale([]series{node, rest, sut})
	require.Equal(t, []string{"node n1", "unattributed"}, []string{big[0].Name, big[1].Name})
	require.Len(t, small, 1)
	require.Equal(t, "sut", small[0].Name)
	big, small = splitByScale([]series{node, rest})
	require.Len(t, big, 2)
	require.Empty(t, small)
}

// TestLagPlotShowsTheFitAgainstTheSLO: a run's lag summed over its
// partitions, and the fitted trend and the SLO's limit from where the fit
// starts.
func TestLagPlotShowsTheFitAgainstTheSLO(t *testing.T) {
	t.Parallel()
	st := testenv.Store(t)
	ctx := context.Background()
	const start = int64(1_760_000_000_000)
	var pts []store.RunMetric
	for k := int64(0); k <= 20; k++ {
		for _, part := range []string{`{"partition":"0"}`, `{"partition":"1"}`} {
			pts = append(pts, store.RunMetric{ExperimentID: "e", RunID: "e-r0000", TsMs: start + k*1000, Name: kafkasignals.MetricConsumerLag,
				Labels: part, Value: float64(100 + 10*k)})
		}
	}
	require.NoError(t, st.InsertRunMetrics(ctx, pts))
	r := store.Run{ExperimentID: "e", RunID: "e-r0000", MeasureStartMs: start, MeasureEndMs: start + 20_000, Factors: `{"workload.sensors":"500"}`}
	p, ok, err := lagPlot(ctx, st, r, map[string]float64{results.LagTrendSlope: 20, results.LagSLOThreshold: 2000, results.LagTrendFitStartS: 5})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "lag, all partitions", p.Series[0].Name)
	require.Equal(t, 200.0, p.Series[0].Y[0], "both partitions added up")
	require.Equal(t, 600.0, p.Series[0].Y[20])
	require.Equal(t, "fitted trend +20 msg/s", p.Series[1].Name)
	require.Equal(t, []float64{5, 20}, p.Series[1].X, "from the fit's start to the window's end")
	require.Equal(t, []float64{300, 600}, p.Series[1].Y)
	require.Equal(t, "SLO limit +2000 msg/s", p.Series[2].Name)
	require.Equal(t, []float64{300, 300 + 2000*15}, p.Series[2].Y)
	require.Contains(t, p.SVG(), "not fitted")

	_, ok, err = lagPlot(ctx, st, store.Run{ExperimentID: "e", RunID: "e-r0001", MeasureStartMs: start, MeasureEndMs: start + 1000}, nil)
	require.NoError(t, err)
	require.False(t, ok, "no lag recorded: no plot")
}

// TestQualityTableSeparatesFlagsFromCaveats: a run's data flags and its
// caveats go to columns of their own; columns no run has are left out.
func TestQualityTableSeparatesFlagsFromCaveats(t *testing.T) {
	head, body := qualityTable([]ResultRow{{RunID: "e-r0000", State: "done", Estimated: true,
		Metrics: map[string]float64{results.QualityUncoveredS: 0.25, results.QualitySampleGaps: 1},
		Flags:   []string{results.FlagDynamicEnergyNegative, results.FlagEnergyGapBridged}}})
	require.Equal(t, []string{"run", "state", "source", "uncovered s", "gaps", "data flags", "caveats"}, head)
	require.Equal(t, []string{"r0000", "done", "estimated (model)", "0.25", "1", results.FlagEnergyGapBridged, results.FlagDynamicEnergyNegative},
		body[0])
	require.False(t, strings.Contains(strings.Join(head, ","), "late s"))
}

// TestReportShowsTheCapacity: an experiment that ran a capacity search has
// its answer at the top of the report.
func TestReportShowsTheCapacity(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	require.NoError(t, st.UpsertRuns(ctx, []store.Run{{ExperimentID: "cap", RunID: "cap-r0000", State: "done", ConfigHash: "c",
		Factors: `{"workload.ratePerSec":"75000"}`, MeasureStartMs: 1_760_000_000_000, MeasureEndMs: 1_760_000_010_000}}))
	require.NoError(t, st.ReplaceResults(ctx, "cap", "cap-r0000", []store.Result{{ExperimentID: "cap", RunID: "cap-r0000", Scope: results.ScopeRun,
		Metric: results.ThroughputEPS, Value: 75_000}}))
	require.NoError(t, st.ReplaceResults(ctx, "cap", "cap-search", []store.Result{
		{ExperimentID: "cap", RunID: "cap-search", Scope: results.ScopeExperiment, Metric: results.CapacityMsgPerS, Value: 75_000},
		{ExperimentID: "cap", RunID: "cap-search", Scope: results.ScopeExperiment, Metric: results.SearchProbes, Value: 7}}))
	page, err := Report(ctx, st, "cap", 1)
	require.NoError(t, err)
	require.Contains(t, string(page), "<h2>Capacity</h2>")
	require.Contains(t, string(page), "75000 msg/s")
}
