package cli_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// TestPruneDropsOldDaysNoRunTouches: samples on four days — two long ago
// without runs, one long ago with a run, one today. The dry run says what
// would go and drops nothing; the prune drops exactly those days, and the
// run's samples and today's stay.
func TestPruneDropsOldDaysNoRunTouches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testenv.ClickHouseDSN(t)
	st := testenv.StoreOn(t, dsn)
	noon := func(y int, m time.Month, d int) int64 { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC).UnixMilli() }
	now := time.Now().UnixMilli()
	var rows []store.Sample
	for _, ts := range []int64{noon(2025, 1, 5), noon(2025, 1, 6), noon(2025, 1, 7), now} {
		for k := int64(0); k < 3; k++ {
			rows = append(rows, store.Sample{TsMs: ts + k*1000, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "rapl", PowerW: 5,
				DeltaJ: 5, IntervalMs: 1000})
		}
	}
	require.NoError(t, st.InsertSamples(ctx, rows))
	require.NoError(t, st.UpsertRuns(ctx, []store.Run{{ExperimentID: "e", RunID: "e-r0", State: events.RunStateDone, CreatedMs: noon(2025, 1, 6) - 60_000,
		MeasureStartMs: noon(2025, 1, 6), MeasureEndMs: noon(2025, 1, 6) + 60_000}}))
	count := func() int {
		n := 0
		require.NoError(t, st.EachSample(ctx, nil, 0, now+10_000, func(store.Sample) error { n++; return nil }))
		return n
	}

	prune := func(args ...string) (string, error) {
		code, out, errOut := clitest.Run(append([]string{"prune", "--clickhouse-dsn", dsn, "--state-dir", t.TempDir()}, args...)...)
		if code != 0 {
			return out, &exitError{code, errOut}
		}
		return out, nil
	}
	out, err := prune("--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "2025-01-05  3     ")
	require.Regexp(t, `2025-01-05 .* would drop +no run on it`, out)
	require.Regexp(t, `2025-01-06 .* keep +1 run on it`, out)
	require.Regexp(t, `2025-01-07 .* would drop +no run on it`, out)
	require.Regexp(t, `keep +recent`, out)
	require.Contains(t, out, "would drop 2 day(s): 6 samples")
	require.Equal(t, 12, count(), "a dry run drops nothing")

	out, err = prune("--format", "json")
	require.NoError(t, err)
	var got struct {
		DryRun bool           `json:"dry_run"`
		Days   []cli.PruneDay `json:"days"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.False(t, got.DryRun)
	require.Len(t, got.Days, 4)
	actions := map[string]string{}
	for _, d := range got.Days {
		actions[d.Day] = d.Action
	}
	require.Equal(t, "dropped", actions["2025-01-05"])
	require.Equal(t, "keep", actions["2025-01-06"])
	require.Equal(t, "dropped", actions["2025-01-07"])
	require.Equal(t, 6, count(), "the run's day and today stay")

	_, err = prune("--older-than", "1h")
	require.ErrorContains(t, err, "--older-than 1h0m0s: expected at least 24h")
}

type exitError struct {
	code   int
	stderr string
}

func (e *exitError) Error() string { return e.stderr }
