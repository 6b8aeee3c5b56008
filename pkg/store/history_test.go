package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestGenerateSampleHistoryBuildsOnceAndStaysOutOfARunsWay: the synthetic
// history holds what was asked, a second call adds nothing (the data set is
// reused), and a run on one of its nodes after it reads only its own rows.
func TestGenerateSampleHistoryBuildsOnceAndStaysOutOfARunsWay(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	var days []int
	got, err := s.GenerateSampleHistory(ctx, t0, 3, 20_000, func(d int) { days = append(days, d) })
	require.NoError(t, err)
	require.Equal(t, uint64(60_000), got)
	require.Equal(t, []int{1, 2, 3}, days)
	again, err := s.GenerateSampleHistory(ctx, t0, 3, 20_000, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(60_000), again)
	n := 0
	require.NoError(t, s.EachSample(ctx, nil, t0-4*24*3600*1000, t0, func(x store.Sample) error {
		n++
		require.Equal(t, "process", x.Scope)
		return nil
	}))
	require.Equal(t, 60_000, n, "every row once: the keys are distinct")
	nodes, err := s.NodesSampledFrom(ctx, []string{"n0"}, t0-24*3600*1000)
	require.NoError(t, err)
	require.Empty(t, nodes, "the history has process samples only")
}
