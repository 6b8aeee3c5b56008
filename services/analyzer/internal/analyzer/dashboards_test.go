package analyzer_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// An analysed run fills what dashboards select by: its measured window and
// baseline as DateTime rows of run_phases, its factors one per row of
// run_factors, and its run metrics get a DateTime for Grafana's filter.
// Re-analysis leaves one row per phase and factor.
func TestAnalysisFillsTheDashboardTables(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 80)
	m.Repetition = 2
	for range 2 {
		_, err := a.AnalyzeAndStore(ctx, m)
		require.NoError(t, err)
	}

	windows, err := st.RunPhases(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, []store.RunPhase{
		{ExperimentID: "e1", RunID: "e1-r0000", ConfigHash: "c1", Repetition: 2, Phase: events.RunStateBaseline, StartMs: m.BaselineStart, EndMs: m.BaselineEnd},
		{ExperimentID: "e1", RunID: "e1-r0000", ConfigHash: "c1", Repetition: 2, Phase: store.PhaseWindow, StartMs: m.MeasureStartMs, EndMs: m.MeasureEndMs},
	}, windows)

	factors, err := st.RunFactors(ctx, "e1")
	require.NoError(t, err)
	require.NotEmpty(t, m.Factors)
	require.Len(t, factors, len(m.Factors))
	for _, f := range factors {
		require.Equal(t, m.Factors[f.Factor], f.Value, f.Factor)
		require.Equal(t, "c1", f.ConfigHash)
	}

	// The DateTime span covers the milliseconds: a filter on it keeps every
	// sample of the window.
	var inside uint64
	require.NoError(t, st.Conn().QueryRow(ctx, `SELECT count() FROM run_phases FINAL WHERE run_id = 'e1-r0000' AND phase = 'window'
		AND toUInt32(start_time) * 1000 <= start_ms AND toUInt32(end_time) * 1000 >= end_ms`).Scan(&inside))
	require.Equal(t, uint64(1), inside)
	var lagPoints uint64
	require.NoError(t, st.Conn().QueryRow(ctx, `SELECT count() FROM run_metrics WHERE run_id = 'e1-r0000'
		AND ts >= toDateTime(intDiv(?, 1000)) AND ts <= toDateTime(intDiv(?, 1000) + 1)`, m.MeasureStartMs, m.MeasureEndMs).Scan(&lagPoints))
	require.Positive(t, lagPoints, "run metrics filtered by their DateTime")
}
