package cli

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
)

// behindRows are three loads of one configuration line; the 400,000-sensor
// run did not keep up (its lag grew at 398,798 msg/s against a 2,000 msg/s
// limit), so its µJ/event — events counted into Kafka — is the lowest.
func behindRows() []ResultRow {
	var rows []ResultRow
	for i, c := range []struct {
		sensors        string
		eps, uj, slope float64
		ok             float64
	}{{"100000", 100_000, 52, 3, 1}, {"200000", 200_000, 48, -0.2, 1}, {"400000", 400_000, 20.7, 398_798, 0}} {
		rows = append(rows, ResultRow{RunID: fmt.Sprintf("e-r%04d", i), ConfigHash: "cfg" + c.sensors, State: "done",
			Factors: map[string]string{"workload.sensors": c.sensors},
			Metrics: map[string]float64{results.OfferedRateEPS: c.eps, results.ThroughputEPS: c.eps, results.SUTMicroJPerEvent: c.uj,
				results.LagTrendSlope: c.slope, results.LagSLOThreshold: 2000, results.LagSLOOK: c.ok}})
	}
	return rows
}

func seriesNamed(t *testing.T, p plot, name string) series {
	t.Helper()
	for _, s := range p.Series {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no series %q in %q", name, p.Title)
	return series{}
}

// TestLoadPlotSetsApartRunsThatFellBehind: the run that failed the lag SLO
// is a cross with its own legend entry, and the trend line does not pass
// through it.
func TestLoadPlotSetsApartRunsThatFellBehind(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p := loadPlot(sums, rows, results.SUTMicroJPerEvent, "SUT energy per event vs offered load")
	line := seriesNamed(t, p, "mean ± CI")
	require.Equal(t, []float64{100_000, 200_000}, line.X, "the line joins only the runs that kept up")
	bad := seriesNamed(t, p, lagSLOFailedName)
	require.Equal(t, "cross", bad.Shape)
	require.False(t, bad.Line)
	require.Contains(t, bad.Y, 20.7)
	reps := seriesNamed(t, p, "repetitions")
	require.NotContains(t, reps.Y, 20.7, "the failed run is not a plain repetition")
	svg := p.SVG()
	wellFormed(t, svg)
	require.Contains(t, svg, ">lag SLO failed: the SUT fell<", "the legend says what the cross means, wrapped, not cut")
	require.Contains(t, svg, ">events it did not process<")
}

// TestThroughputPlotShowsWhatTheSUTProcessed: delivered is labelled as what
// went into Kafka; processed (delivered less the lag's growth, at least 0)
// puts the run that fell behind far off the diagonal.
func TestThroughputPlotShowsWhatTheSUTProcessed(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p := throughputPlot(sums, rows)
	delivered := seriesNamed(t, p, "delivered (generator into Kafka)")
	require.Equal(t, []float64{100_000, 200_000, 400_000}, delivered.Y)
	processed := seriesNamed(t, p, processedName)
	require.Equal(t, []float64{100_000, 200_000, 400_000}, processed.X)
	require.InDeltaSlice(t, []float64{99_997, 200_000.2, 1202}, processed.Y, 1e-6)
	rows[2].Metrics[results.LagTrendSlope] = 500_000
	p = throughputPlot(SummarizeRuns(rows, DefaultLevel), rows)
	require.Equal(t, 0.0, seriesNamed(t, p, processedName).Y[2], "never below zero")
	wellFormed(t, p.SVG())
}

// TestRunTableShowsEachRunsLagVerdict: the runs table has the run's own
// lag-SLO verdict from its lag_slo_ok.
func TestRunTableShowsEachRunsLagVerdict(t *testing.T) {
	rows := append(behindRows(), ResultRow{RunID: "e-r0003", State: "failed"})
	head, body := runTable(rows)
	col := slices.Index(head, "lag SLO")
	require.Positive(t, col)
	var got []string
	for _, r := range body {
		got = append(got, r[col])
	}
	require.Equal(t, []string{"ok", "ok", "FAIL", "-"}, got)
	require.False(t, strings.Contains(strings.Join(body[2], " "), "NaN"))
}

// TestParetoFrontLeavesOutRunsThatFellBehind: the configuration whose SUT
// did not keep up has the lowest µJ/event and the most events/s, yet it is
// not on the drawn front (nor in the table's); it is a cross of its own.
func TestParetoFrontLeavesOutRunsThatFellBehind(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p, note := paretoPlot(sums)
	front := seriesNamed(t, p, "Pareto front")
	require.NotContains(t, front.X, 400_000.0)
	require.Equal(t, []float64{200_000}, front.X, "the table's front: the most events/s for the fewest µJ among those that kept up")
	require.Equal(t, []float64{20.7}, seriesNamed(t, p, lagSLOFailedName).Y)
	require.NotContains(t, note, "sensors=400000")
	wellFormed(t, p.SVG())
}
