package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
)

// A database written with the schema before 0005 is migrated by three
// services at once: every run metric is kept and gets its DateTime, the
// runs already measured get their measured window in run_phases (an
// analysis's own rows take over later), and the old run_metrics stays
// aside.
func TestDashboardMigrationKeepsRunMetricsAndBackfillsWindows(t *testing.T) {
	t.Parallel()
	ctx, dsn, old := openBefore(t, 4)
	require.NoError(t, old.InsertRunMetrics(ctx, oldMetrics()))
	startMs := int64(1_760_000_000_250)
	require.NoError(t, old.UpsertRuns(ctx, []store.Run{
		{ExperimentID: "e1", RunID: "e1-r0000", Repetition: 1, ConfigHash: "c1", State: "done", MeasureStartMs: startMs, MeasureEndMs: startMs + 60_500},
		{ExperimentID: "e1", RunID: "e1-r0001", Repetition: 0, ConfigHash: "c1", State: "pending"}, // not measured: no window
	}))
	require.NoError(t, old.Close())

	stores, errs := openAtOnce(t, ctx, dsn, 3)
	for i, err := range errs {
		require.NoError(t, err, "service %d", i)
	}
	s := stores[0]
	require.Equal(t, "ReplacingMergeTree", engineOf(t, s, "run_metrics_before_0005"), "old rows kept aside")
	require.Equal(t, uint64(20), count(t, s, "SELECT count() FROM run_metrics FINAL"))
	require.Equal(t, uint64(20), count(t, s, "SELECT count() FROM run_metrics FINAL WHERE ts = toDateTime(intDiv(ts_ms, 1000))"),
		"each kept row has its DateTime")

	windows, err := s.RunPhases(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, []store.RunPhase{{ExperimentID: "e1", RunID: "e1-r0000", ConfigHash: "c1", Repetition: 1, Phase: store.PhaseWindow,
		StartMs: startMs, EndMs: startMs + 60_500}}, windows)
	require.Equal(t, uint64(1), count(t, s, `SELECT count() FROM run_phases FINAL
		WHERE start_time = toDateTime(1760000000) AND end_time = toDateTime(1760000061)`), "whole seconds around the window")

	// A new write names ts_ms only; ts follows, and an analysis's rows
	// replace the backfilled ones.
	require.NoError(t, s.InsertRunMetrics(ctx, []store.RunMetric{{ExperimentID: "e1", RunID: "e1-r0000", TsMs: 1_760_000_005_999, Name: "x", Value: 1}}))
	require.Equal(t, uint64(1), count(t, s, "SELECT count() FROM run_metrics WHERE name = 'x' AND ts = toDateTime(1760000005)"))
	require.NoError(t, s.ReplaceRunPhases(ctx, []store.RunPhase{{ExperimentID: "e1", RunID: "e1-r0000", ConfigHash: "c1", Repetition: 1,
		Phase: store.PhaseWindow, StartMs: startMs + 1000, EndMs: startMs + 2000}}))
	windows, err = s.RunPhases(ctx, "e1")
	require.NoError(t, err)
	require.Len(t, windows, 1)
	require.Equal(t, startMs+1000, windows[0].StartMs)
}
