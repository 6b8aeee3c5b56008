package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestMigrationsAreOrderedAndIdempotentUnderConcurrency(t *testing.T) {
	t.Parallel()
	migs, err := store.Migrations()
	require.NoError(t, err)
	require.NotEmpty(t, migs)
	for i := 1; i < len(migs); i++ {
		require.Greater(t, migs[i].Version, migs[i-1].Version)
	}

	dsn := testenv.ClickHouseDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Four services starting at once against an empty database.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := store.Open(ctx, dsn, testenv.Logger(t))
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s, err := store.Open(ctx, dsn, testenv.Logger(t))
	require.NoError(t, err)
	defer s.Close()
	versions, err := s.AppliedVersions(ctx)
	require.NoError(t, err)
	require.Equal(t, migs[len(migs)-1].Version, versions[len(versions)-1])
	require.Len(t, versions, len(migs), "each version recorded once after DISTINCT")
}

func TestSamplesKeepMillisecondTimestamps(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	base := int64(1_760_000_000_123)
	var in []store.Sample
	for i := 0; i < 5; i++ {
		in = append(in, store.Sample{TsMs: base + int64(i)*7, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "model",
			PowerW: 10, EnergyJ: float64(i) * 0.07, DeltaJ: 0.07, IntervalMs: 7, Estimated: true, Collector: "c1"})
	}
	require.NoError(t, s.InsertSamples(ctx, in))
	rows, err := s.Conn().Query(ctx, "SELECT ts_ms, toUnixTimestamp(ts), estimated FROM samples ORDER BY ts_ms")
	require.NoError(t, err)
	defer rows.Close()
	i := 0
	for rows.Next() {
		var ts int64
		var sec uint32
		var est uint8
		require.NoError(t, rows.Scan(&ts, &sec, &est))
		require.Equal(t, base+int64(i)*7, ts)
		require.Equal(t, uint32(ts/1000), sec)
		require.Equal(t, uint8(1), est)
		i++
	}
	require.Equal(t, 5, i)
}

func TestReanalysisReplacesResults(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	first := []store.Result{
		{Scope: "run", Metric: "energy_j", Value: 10, Unit: "J"},
		{Scope: "run", Metric: "stale_metric", Value: 1, Unit: "1"},
	}
	require.NoError(t, s.ReplaceResults(ctx, "exp1", "run1", first))
	second := []store.Result{{Scope: "run", Metric: "energy_j", Value: 12.5, Unit: "J", Estimated: true}}
	require.NoError(t, s.ReplaceResults(ctx, "exp1", "run1", second))
	require.NoError(t, s.ReplaceResults(ctx, "exp1", "run2", first[:1]))

	got, err := s.Results(ctx, "exp1")
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "run1", got[0].RunID)
	require.Equal(t, 12.5, got[0].Value)
	require.True(t, got[0].Estimated)
	require.Equal(t, "run2", got[1].RunID)
	require.Equal(t, 10.0, got[1].Value)
}

func TestRunsAndExperimentsUpsert(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "demo", State: "running", RunsTotal: 2}))
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "demo", State: "done", RunsTotal: 2}))
	e, err := s.GetExperiment(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, "done", e.State)
	_, err = s.GetExperiment(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)

	// Written out of order, as two goroutines may: the higher version wins.
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e1", RunID: "r1", Index: 0, State: "done", MeasureStartMs: 5, MeasureEndMs: 9, Version: 7}}))
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e1", RunID: "r1", Index: 0, State: "measuring", Version: 6},
		{ExperimentID: "e1", RunID: "r2", Index: 1, State: "pending", Version: 8}}))
	runs, err := s.Runs(ctx, "e1")
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.Equal(t, "done", runs[0].State)
	require.Equal(t, int64(9), runs[0].MeasureEndMs)
}
