package runcharts_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestSmallComponentsGetTheirOwnScale: a 0.2 W SUT beside a 7 W node goes
// to a plot of its own, bursts or not; components of one size stay together.
func TestSmallComponentsGetTheirOwnScale(t *testing.T) {
	node := svgplot.Series{Name: "node n1", Y: []float64{6.5, 7}}
	rest := svgplot.Series{Name: "unattributed", Y: []float64{6, 6.6}}
	sut := svgplot.Series{Name: "sut", Y: []float64{0.1, 0.2}}
	big, small := runcharts.SplitByScale([]svgplot.Series{node, rest, sut})
	require.Equal(t, []string{"node n1", "unattributed"}, []string{big[0].Name, big[1].Name})
	require.Len(t, small, 1)
	require.Equal(t, "sut", small[0].Name)
	big, small = runcharts.SplitByScale([]svgplot.Series{node, rest})
	require.Len(t, big, 2)
	require.Empty(t, small)

	// What a process's power sampled every 200 ms looks like: a CPU tick
	// or none, and a burst when it emits. The bursts (1.9 W beside a 13 W
	// node) do not keep it on the node's axis; a part drawing a fifth of
	// the node throughout stays there.
	node = svgplot.Series{Name: "node vm", Y: []float64{12, 13, 12.5, 12, 12.8, 12.2, 12.4, 12.9, 12, 12.6}}
	bursty := svgplot.Series{Name: "sut", Y: []float64{0, 0.28, 0, 1.9, 0.29, 0, 0.28, 0, 1.5, 0}}
	steady := svgplot.Series{Name: "load-generator", Y: []float64{2.4, 2.6, 2.5, 2.7, 2.4, 2.5, 2.6, 2.5, 2.4, 2.6}}
	big, small = runcharts.SplitByScale([]svgplot.Series{node, bursty, steady})
	require.Equal(t, []string{"node vm", "load-generator"}, []string{big[0].Name, big[1].Name})
	require.Len(t, big, 2)
	require.Len(t, small, 1)
	require.Equal(t, "sut", small[0].Name)
	plots := runcharts.PowerPlots(svgplot.Plot{Title: "Power", Series: []svgplot.Series{node, bursty, steady}})
	require.Len(t, plots, 2)
	require.Equal(t, "Power", plots[0].Title)
	require.Len(t, plots[0].Series, 2)
	require.Equal(t, "Power: smaller components, own scale (sut)", plots[1].Title)
	require.Len(t, runcharts.PowerPlots(svgplot.Plot{Title: "Power", Series: []svgplot.Series{node, steady}}), 1)
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
	p, ok, err := runcharts.Lag(ctx, st, r, map[string]float64{results.LagTrendSlope: 20, results.LagSLOThreshold: 2000, results.LagTrendFitStartS: 5})
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

	_, ok, err = runcharts.Lag(ctx, st, store.Run{ExperimentID: "e", RunID: "e-r0001", MeasureStartMs: start, MeasureEndMs: start + 1000}, nil)
	require.NoError(t, err)
	require.False(t, ok, "no lag recorded: no plot")
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
	p, ok, err := runcharts.Lag(ctx, st, r, map[string]float64{results.LagTrendSlope: 45, results.LagSLOThreshold: 2000, results.LagTrendFitStartS: 5})
	require.NoError(t, err)
	require.True(t, ok)
	_, yhi, ok := p.YRange()
	require.True(t, ok)
	require.LessOrEqual(t, yhi, 1200.0, "the axis fits the lag (100–1,000), not the SLO line")
	svg := p.SVG()
	require.NoError(t, svgplot.WellFormed(svg), svg)
	require.Contains(t, svg, ">SLO threshold 30,325 (above the</text>", "the note says where the SLO line goes")
	require.Contains(t, svg, ">plot)</text>")
	require.Contains(t, svg, ">SLO limit +2000 msg/s<", "the line that is in range keeps its legend entry")

	// A threshold within the lag's range is drawn whole, with no note.
	p, _, err = runcharts.Lag(ctx, st, r, map[string]float64{results.LagTrendSlope: 45, results.LagSLOThreshold: 50, results.LagTrendFitStartS: 5})
	require.NoError(t, err)
	require.NotContains(t, p.SVG(), "above the")
}
