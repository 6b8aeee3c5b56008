package report

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestReportOfARunThatFellBehindInChromium: an experiment whose largest
// load did not keep up (lag growing at 398,798 msg/s against 2,000 msg/s,
// and so the lowest µJ/event) rendered by headless Chromium and saved as a
// test artifact (GREENFLOW_TEST_ARTIFACTS, else the temp dir): the page
// says which runs failed the lag SLO — crosses in the energy and Pareto
// plots, processed below delivered, FAIL in the runs table — and the lag
// plots of the runs that kept up are on the lag's scale.
func TestReportOfARunThatFellBehindInChromium(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const start = int64(1_760_000_000_000)
	var runs []store.Run
	n := 0
	for _, c := range []struct {
		sensors       int
		uj, slope, ok float64
	}{{100_000, 52, 3, 1}, {200_000, 48, -0.2, 1}, {400_000, 20.7, 398_798, 0}} {
		for rep := range 2 {
			id := fmt.Sprintf("behind-r%04d", n)
			n++
			runs = append(runs, store.Run{ExperimentID: "behind", RunID: id, State: events.RunStateDone, Repetition: uint32(rep),
				ConfigHash: fmt.Sprintf("c%d", c.sensors), Factors: fmt.Sprintf(`{"workload.sensors":"%d"}`, c.sensors),
				MeasureStartMs: start, MeasureEndMs: start + 60_000})
			var res []store.Result
			for m, v := range map[string]float64{results.OfferedRateEPS: float64(c.sensors),
				results.ThroughputEPS: float64(c.sensors) * (1 - 0.001*float64(rep)), results.SUTMicroJPerEvent: c.uj + float64(rep),
				results.NodeMicroJPerEvent: c.uj*3 + float64(rep)*80, results.LagTrendSlope: c.slope, results.LagSLOThreshold: 2000,
				results.LagSLOOK: c.ok, results.LagTrendFitStartS: 10, results.DurationS: 60} {
				res = append(res, store.Result{ExperimentID: "behind", RunID: id, Scope: results.ScopeRun, Metric: m, Value: v})
			}
			require.NoError(t, st.ReplaceResults(ctx, "behind", id, res))
			var pts []store.RunMetric
			for k := int64(0); k <= 60; k += 2 {
				lag := 300 + 500*float64(k%7)/7 // 300–800, no trend
				if c.ok == 0 {
					lag = c.slope * float64(k)
				}
				pts = append(pts, store.RunMetric{ExperimentID: "behind", RunID: id, TsMs: start + k*1000, Name: kafkasignals.MetricConsumerLag,
					Labels: `{"partition":"0"}`, Value: lag})
			}
			require.NoError(t, st.InsertRunMetrics(ctx, pts))
		}
	}
	require.NoError(t, st.UpsertRuns(ctx, runs))
	page, err := Report(ctx, st, "behind", 3)
	require.NoError(t, err)
	html := string(page)
	require.Contains(t, html, ">lag SLO failed: the SUT fell<", "the energy and Pareto plots' legend")
	require.Contains(t, html, ">processed (estimated from<")
	require.Contains(t, html, "<td>FAIL</td>", "the runs table's verdict")
	require.Regexp(t, `>SLO threshold 10[0-9],[0-9]{3} \(above`, html, "the SLO line of the runs that kept up is off their lag's scale")

	path := filepath.Join(t.TempDir(), "report.html")
	require.NoError(t, os.WriteFile(path, page, 0o644))
	shot, img := testenv.Screenshot(t, path, "report-lag-slo-failed.png", 1100, 4500)
	// The crosses (#B00020) are drawn: the load plots, the Pareto plot and
	// their legends hold many of their pixels.
	red := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if r>>8 > 150 && r>>8 < 200 && g>>8 < 40 && b>>8 < 60 {
				red++
			}
		}
	}
	require.Greater(t, red, 200, "the crosses of the runs that fell behind show in the rendered page")
	t.Logf("report screenshot: %s (%d pixels of the crosses' colour)", shot, red)
}
