package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
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

// TestLagPlotScalesToTheLag: a lag of 100–1,000 under an SLO line that
// reaches 30,300 is drawn on an axis fitted to the lag; the SLO line is cut
// where it leaves the plot, and a note says where it ends.
func TestLagPlotScalesToTheLag(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const start = int64(1_760_000_000_000)
	var pts []store.RunMetric
	for k := int64(0); k <= 20; k++ {
		pts = append(pts, store.RunMetric{ExperimentID: "e", RunID: "e-r0000", TsMs: start + k*1000, Name: kafkasignals.MetricConsumerLag,
			Labels: `{"partition":"0"}`, Value: float64(100 + 45*k)})
	}
	require.NoError(t, st.InsertRunMetrics(ctx, pts))
	r := store.Run{ExperimentID: "e", RunID: "e-r0000", MeasureStartMs: start, MeasureEndMs: start + 20_000}
	p, ok, err := lagPlot(ctx, st, r, map[string]float64{results.LagTrendSlope: 45, results.LagSLOThreshold: 2000, results.LagTrendFitStartS: 5})
	require.NoError(t, err)
	require.True(t, ok)
	_, yhi, ok := p.YRange()
	require.True(t, ok)
	require.LessOrEqual(t, yhi, 1200.0, "the axis fits the lag (100–1,000), not the SLO line")
	svg := p.SVG()
	wellFormed(t, svg)
	require.Contains(t, svg, ">SLO threshold 30,325 (above the</text>", "the note says where the SLO line goes")
	require.Contains(t, svg, ">plot)</text>")
	require.Contains(t, svg, ">SLO limit +2000 msg/s<", "the line that is in range keeps its legend entry")

	// A threshold within the lag's range is drawn whole, with no note.
	p, _, err = lagPlot(ctx, st, r, map[string]float64{results.LagTrendSlope: 45, results.LagSLOThreshold: 50, results.LagTrendFitStartS: 5})
	require.NoError(t, err)
	require.NotContains(t, p.SVG(), "above the")
}

// TestNoNegativeZero: a slope of -0.3 msg/s is "0 msg/s" in the legend, a
// residual of -0.00001 J is 0.0000 in the tables; real negatives and ids
// with "-0" keep their sign.
func TestNoNegativeZero(t *testing.T) {
	for in, want := range map[string]string{
		"fitted trend -0 msg/s": "fitted trend 0 msg/s", "-0.0000": "0.0000", "12.5 ± -0.00": "12.5 ± 0.00", "-0.05": "-0.05",
		"-0.0e-05": "-0.0e-05", "run-0": "run-0", "-1.0": "-1.0", "a\t-0.0\t-0": "a\t0.0\t0", "(-0)": "(0)",
	} {
		require.Equal(t, want, noNegZero(in), in)
	}
	p := plot{Series: []series{{Name: fmt.Sprintf("fitted trend %+.0f msg/s", -0.3), X: []float64{0, 1}, Y: []float64{1, 1}, Line: true}}}
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
	require.True(t, crossesZero(results.NodeMicroJPerEvent, sums[0].Metrics[results.NodeMicroJPerEvent]), "the table marks it ‡")
	p := loadPlot(sums, rows, results.NodeMicroJPerEvent, "Node energy per event vs offered load")
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
	p = loadPlot(SummarizeRuns(rows, DefaultLevel), rows, results.LagTrendSlope, "slope")
	ylo, _, _ = p.YRange()
	require.Less(t, ylo, 0.0)
	require.NotContains(t, p.SVG(), "ci-clamped")
}

// wellFormed requires that svg parses as XML.
func wellFormed(t *testing.T, svg string) {
	t.Helper()
	require.NoError(t, svgplot.WellFormed(svg), svg)
}
