package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestSampleDaysCountTheRunsTouchingThemAndDropRemovesADay: samples on
// three days, one run on the middle one and one still going since the last; the days come with their rows and
// runs, and dropping a day without runs leaves the others whole.
func TestSampleDaysCountTheRunsTouchingThemAndDropRemovesADay(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	// Noon UTC on three days: whatever the server's zone (UTC-11 to UTC+11
	// keep noon on the same date), each is its own partition.
	noon := func(d int) int64 { return time.Date(2025, 3, d, 12, 0, 0, 0, time.UTC).UnixMilli() }
	var rows []store.Sample
	for _, d := range []int{10, 12, 14} {
		for k := int64(0); k < 5; k++ {
			rows = append(rows, store.Sample{TsMs: noon(d) + k*1000, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "rapl", PowerW: 5,
				DeltaJ: 5, IntervalMs: 1000})
		}
	}
	require.NoError(t, s.InsertSamples(ctx, rows))
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e", RunID: "e-r0", State: "done", CreatedMs: noon(12) - 60_000,
		MeasureStartMs: noon(12), MeasureEndMs: noon(12) + 60_000}}))

	days, err := s.SampleDays(ctx)
	require.NoError(t, err)
	require.Len(t, days, 3)
	require.Equal(t, []uint32{20250310, 20250312, 20250314}, []uint32{days[0].Day, days[1].Day, days[2].Day})
	for _, d := range days {
		require.Equal(t, uint64(5), d.Rows)
		require.Positive(t, d.Bytes)
	}
	require.Equal(t, []uint64{0, 1, 0}, []uint64{days[0].Runs, days[1].Runs, days[2].Runs})

	// A run without a measured window yet (queued, running) spans up to now.
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e", RunID: "e-r1", State: "running", CreatedMs: noon(14)}}))
	days, err = s.SampleDays(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{0, 1, 1}, []uint64{days[0].Runs, days[1].Runs, days[2].Runs})

	require.NoError(t, s.DropSampleDay(ctx, 20250310))
	days, err = s.SampleDays(ctx)
	require.NoError(t, err)
	require.Len(t, days, 2)
	require.Equal(t, uint32(20250312), days[0].Day)
	n := 0
	require.NoError(t, s.EachSample(ctx, []string{"n1"}, noon(12)-1, noon(12)+10_000, func(store.Sample) error { n++; return nil }))
	require.Equal(t, 5, n, "the run's samples are kept")
	// A run that failed before its measured window spans to the last time
	// in its phases, not to now: it keeps day 12, not day 14.
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e", RunID: "e-r2", State: "failed", CreatedMs: noon(12) - 5000,
		Phases: fmt.Sprintf(`[{"name":"provisioning","start_ms":%d,"end_ms":%d}]`, noon(12)-5000, noon(12)+20_000)}}))
	days, err = s.SampleDays(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 1}, []uint64{days[0].Runs, days[1].Runs}, "day 12: e-r0 and e-r2; day 14: e-r1 still running")
	require.ErrorContains(t, s.DropSampleDay(ctx, 123), "not a YYYYMMDD day")
	today, err := s.Today(ctx)
	require.NoError(t, err)
	require.Greater(t, today, uint32(20260101))
}
