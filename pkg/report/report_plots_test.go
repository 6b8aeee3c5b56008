package report

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestQualityTableSeparatesFlagsFromCaveats: a run's data flags and its
// caveats go to columns of their own; columns no run has are left out.
func TestQualityTableSeparatesFlagsFromCaveats(t *testing.T) {
	head, body := QualityTable([]ResultRow{{RunID: "e-r0000", State: "done", Estimated: true,
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

// TestNoNegativeZero: a slope of -0.3 msg/s is "0 msg/s" in the legend, a
// residual of -0.00001 J is 0.0000 in the tables; real negatives and ids
// with "-0" keep their sign.
func TestNoNegativeZero(t *testing.T) {
	for in, want := range map[string]string{
		"fitted trend -0 msg/s": "fitted trend 0 msg/s", "-0.0000": "0.0000", "12.5 ± -0.00": "12.5 ± 0.00", "-0.05": "-0.05",
		"-0.0e-05": "-0.0e-05", "run-0": "run-0", "-1.0": "-1.0", "a\t-0.0\t-0": "a\t0.0\t0", "(-0)": "(0)",
	} {
		require.Equal(t, want, svgplot.NoNegZero(in), in)
	}
	p := svgplot.Plot{Series: []svgplot.Series{{Name: fmt.Sprintf("fitted trend %+.0f msg/s", -0.3), X: []float64{0, 1}, Y: []float64{1, 1}, Line: true}}}
	require.Contains(t, p.SVG(), ">fitted trend 0 msg/s<")
	require.NotContains(t, p.SVG(), "-0 msg/s")

	st, ctx := testenv.ParallelStore(t)
	require.NoError(t, st.UpsertRuns(ctx, []store.Run{{ExperimentID: "nz", RunID: "nz-r0000", State: "done", ConfigHash: "c",
		MeasureStartMs: 1_760_000_000_000, MeasureEndMs: 1_760_000_010_000}}))
	require.NoError(t, st.ReplaceResults(ctx, "nz", "nz-r0000", []store.Result{
		{ExperimentID: "nz", RunID: "nz-r0000", Scope: results.ScopeRun, Metric: results.LagTrendSlope, Value: -0.01},
		{ExperimentID: "nz", RunID: "nz-r0000", Scope: results.ScopeRun, Metric: results.QualityAttributionResidualJ, Value: -0.00001}}))
	page, err := Report(context.Background(), st, "nz", 1)
	require.NoError(t, err)
	require.NotContains(t, string(page), ">-0.0<", "the runs table's lag slope")
	require.NotContains(t, string(page), ">-0.0000<", "the quality table's residual")
	require.Contains(t, string(page), ">0.0000<")
}

// TestPlotsClampIntervalsOfPositiveQuantitiesAtZero: three repetitions of
// node µJ/event spread so far that the interval reaches below zero are
// drawn to 0 with an arrow and ‡, explained in a note — the axis does not
// go to -1,200 µJ.
func TestPlotsClampIntervalsOfPositiveQuantitiesAtZero(t *testing.T) {
	var rows []ResultRow
	for i, v := range []float64{10, 50, 900} {
		rows = append(rows, ResultRow{RunID: fmt.Sprintf("e-r%04d", i), ConfigHash: "c1", State: "done", Factors: map[string]string{"workload.sensors": "1000"},
			Metrics: map[string]float64{results.OfferedRateEPS: 1000, results.NodeMicroJPerEvent: v}})
	}
	sums := SummarizeRuns(rows, DefaultLevel)
	require.True(t, compare.CrossesZero(results.NodeMicroJPerEvent, sums[0].Metrics[results.NodeMicroJPerEvent]), "the table marks it ‡")
	p := LoadPlot(sums, rows, results.NodeMicroJPerEvent, "Node energy per event vs offered load")
	ylo, _, ok := p.YRange()
	require.True(t, ok)
	require.Equal(t, 0.0, ylo, "no axis below zero for a quantity that cannot be negative")
	svg := p.SVG()
	wellFormed(t, svg)
	require.Equal(t, 1, strings.Count(svg, `class="ci-clamped"`), "the cut interval is marked")
	require.Contains(t, svg, ">‡ arrow at 0: the interval")

	// A quantity that can be negative (the lag slope) keeps its interval.
	for i, v := range []float64{-50, 10, 60} {
		rows[i].Metrics[results.LagTrendSlope] = v
	}
	p = LoadPlot(SummarizeRuns(rows, DefaultLevel), rows, results.LagTrendSlope, "slope")
	ylo, _, _ = p.YRange()
	require.Less(t, ylo, 0.0)
	require.NotContains(t, p.SVG(), "ci-clamped")
}

// wellFormed requires that svg parses as XML.
func wellFormed(t *testing.T, svg string) {
	t.Helper()
	require.NoError(t, svgplot.WellFormed(svg), svg)
}
