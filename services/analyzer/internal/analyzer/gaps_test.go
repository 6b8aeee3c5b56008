package analyzer_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Gaps the collectors recorded in ClickHouse reach the runs whose window
// they touch: samples dropped past the spool bound (2 s, and 1 s of it
// again from a second collector: counted once) and an implausible counter
// jump (1 s) on the run's node are flagged with the window time lost; a
// gap before the window and one on another node are not the run's.
func TestRecordedGapsFlagTheRunsTheyTouch(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 80)
	clean, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	require.False(t, index(clean).has("run", "", results.QualityRecordedGapS), "no gap recorded: no figure")
	require.NotContains(t, sum.Flags, results.FlagEnergyGapRecorded)

	s := m.MeasureStartMs
	require.NoError(t, st.InsertGaps(ctx, []store.Gap{
		{Node: "n1", Source: "model", FromMs: s + 4000, ToMs: s + 6000, Samples: 2, Reason: store.GapSpoolFull, Collector: "c1"},
		{Node: "n1", Source: "model", FromMs: s + 5000, ToMs: s + 6000, Samples: 1, Reason: store.GapSpoolFull, Collector: "c2"},
		{Node: "n1", Source: "rapl/n1", FromMs: s + 9000, ToMs: s + 10000, Samples: 1, Reason: store.GapImplausible, Detail: "package-0: +262000 J"},
		{Node: "n1", Source: "model", FromMs: s - 30000, ToMs: s - 20000, Reason: store.GapFreshBaseline},
		{Node: "n9", Source: "model", FromMs: s, ToMs: s + 20000, Reason: store.GapFreshBaseline},
	}))
	res, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	r := index(res)
	r.expect(t, []want{
		{"run", "", results.QualityRecordedGapS, 3, 1e-9},
		{"node", "n1", results.QualityRecordedGapS, 3, 1e-9},
		{"run", "", results.FlagMetric(results.FlagEnergyGapRecorded), 1, 0},
		{"run", "", results.FlagMetric(results.FlagEnergyImplausible), 1, 0},
	})
	require.False(t, r.has("node", "n9", results.QualityRecordedGapS), "not the run's node")
	require.Contains(t, sum.Flags, results.FlagEnergyGapRecorded)
	require.Contains(t, sum.Flags, results.FlagEnergyImplausible)
	require.IsIncreasing(t, sum.Flags)
}
