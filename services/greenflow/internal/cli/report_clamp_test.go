package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

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
