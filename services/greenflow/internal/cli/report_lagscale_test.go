package cli

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

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
