package store_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// The analysis tables keep every write; readers see the newest analysis of
// each run (results, run_targets) or configuration (config_results).
func TestAnalysisTablesReadTheNewestWrite(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)

	t.Run("run targets", func(t *testing.T) {
		require.NoError(t, s.ReplaceRunTargets(ctx, []store.RunTarget{{ExperimentID: "e1", RunID: "r1", TargetID: "p/a", Kind: "process", Node: "n1",
			Role: "sut"}, {ExperimentID: "e1", RunID: "r1", TargetID: "p/b", Kind: "process", Node: "n1", Role: "broker"}}))
		require.NoError(t, s.ReplaceRunTargets(ctx, []store.RunTarget{{ExperimentID: "e1", RunID: "r1", TargetID: "p/a", Kind: "process", Node: "n2",
			Role: "sut"}}))
		require.NoError(t, s.ReplaceRunTargets(ctx, []store.RunTarget{{ExperimentID: "e1", RunID: "r2", TargetID: "p/c", Kind: "pod", Node: "n1",
			Role: "loadgen"}}))
		got, err := s.RunTargets(ctx, "e1")
		require.NoError(t, err)
		require.Equal(t, []store.RunTarget{{ExperimentID: "e1", RunID: "r1", TargetID: "p/a", Kind: "process", Node: "n2", Role: "sut"},
			{ExperimentID: "e1", RunID: "r2", TargetID: "p/c", Kind: "pod", Node: "n1", Role: "loadgen"}}, got)
	})

	t.Run("configuration statistics", func(t *testing.T) {
		first := store.ConfigResult{ConfigHash: "c1", Factors: `{"a":"1"}`, Metric: results.NodeEnergyJ, Unit: results.UnitJoule,
			Summary: stats.Describe([]float64{1}, 0.95), RunIDs: []string{"r1"}}
		require.NoError(t, s.ReplaceConfigResults(ctx, "e1", "c1", []store.ConfigResult{first,
			{ConfigHash: "c1", Metric: results.EventsFromBroker, Summary: stats.Describe([]float64{1}, 0.95)}}))
		second := first
		second.Summary, second.RunIDs, second.CVFlag, second.Estimated = stats.Describe([]float64{1, 3}, 0.95), []string{"r1", "r2"}, true, true
		require.NoError(t, s.ReplaceConfigResults(ctx, "e1", "c1", []store.ConfigResult{second}))
		got, err := s.ConfigResults(ctx, "e1")
		require.NoError(t, err)
		require.Len(t, got, 1, "the newest write of the configuration replaces all of its rows")
		require.Equal(t, second, got[0])

		require.NoError(t, s.ReplaceConfigResults(ctx, "e1", "c2", []store.ConfigResult{first}))
		got, err = s.ConfigResults(ctx, "e1")
		require.NoError(t, err)
		require.Len(t, got, 2)
		require.True(t, math.IsNaN(got[1].SD), "NaN survives the round trip")
		require.Equal(t, "c2", got[1].ConfigHash)
	})

	t.Run("run-scope results of chosen runs", func(t *testing.T) {
		row := func(scope, metric string, v float64) store.Result {
			return store.Result{Scope: scope, Metric: metric, Value: v, Unit: results.UnitJoule, Estimated: true}
		}
		require.NoError(t, s.ReplaceResults(ctx, "e2", "r1", []store.Result{row(results.ScopeRun, results.NodeEnergyJ, 1),
			row(results.ScopeRun, results.SUTEnergyJ, 1)}))
		require.NoError(t, s.ReplaceResults(ctx, "e2", "r1", []store.Result{row(results.ScopeRun, results.NodeEnergyJ, 2),
			row(results.ScopeNode, results.EnergyJ, 2)}))
		require.NoError(t, s.ReplaceResults(ctx, "e2", "r2", []store.Result{row(results.ScopeRun, results.NodeEnergyJ, 3)}))
		require.NoError(t, s.ReplaceResults(ctx, "e2", "r3", []store.Result{row(results.ScopeRun, results.NodeEnergyJ, 4)}))
		got, err := s.RunScopeResults(ctx, "e2", []string{"r1", "r2"})
		require.NoError(t, err)
		want := []store.Result{row(results.ScopeRun, results.NodeEnergyJ, 2), row(results.ScopeRun, results.NodeEnergyJ, 3)}
		want[0].ExperimentID, want[0].RunID, want[1].ExperimentID, want[1].RunID = "e2", "r1", "e2", "r2"
		require.Equal(t, want, got)
		none, err := s.RunScopeResults(ctx, "e2", nil)
		require.NoError(t, err)
		require.Empty(t, none)
	})
}

func TestRunQueries(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{
		{ExperimentID: "e1", RunID: "r1", ConfigHash: "c1", Config: `{"workload":{}}`, State: events.RunStateDone},
		{ExperimentID: "e1", RunID: "r2", ConfigHash: "c1", State: events.RunStateFailed},
		{ExperimentID: "e1", RunID: "r3", ConfigHash: "c1", State: events.RunStateAnalyzing},
		{ExperimentID: "e1", RunID: "r4", ConfigHash: "c2", State: events.RunStateDone},
	}))
	ids, err := s.ConfigRunIDs(ctx, "e1", "c1", []string{events.RunStateFailed, events.RunStateCancelled})
	require.NoError(t, err)
	require.Equal(t, []string{"r1", "r3"}, ids)
	ids, err = s.ConfigRunIDs(ctx, "e1", "c1", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"r1", "r2", "r3"}, ids)

	cfg, err := s.RunConfig(ctx, "e1", "r1")
	require.NoError(t, err)
	require.Equal(t, `{"workload":{}}`, cfg)
	cfg, err = s.RunConfig(ctx, "e1", "nope")
	require.NoError(t, err)
	require.Empty(t, cfg)
}

func TestRunMetricQueries(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	pt := func(name, labels string, ts int64, v float64) store.RunMetric {
		return store.RunMetric{ExperimentID: "e1", RunID: "r1", TsMs: ts, Name: name, Labels: labels, Value: v}
	}
	require.NoError(t, s.InsertRunMetrics(ctx, []store.RunMetric{
		pt("sent", `{"i":"a"}`, 3000, 30), pt("sent", `{"i":"a"}`, 1000, 10), pt("sent", `{"i":"a"}`, 2000, 20), pt("sent", `{"i":"a"}`, 2000, 21),
		pt("sent", `{"i":"b"}`, 1500, 5), pt("lag", `{}`, 9000, 7),
		{ExperimentID: "e1", RunID: "r2", TsMs: 1000, Name: "sent", Labels: `{"i":"a"}`, Value: 99},
	}))
	series, err := s.RunMetricSeries(ctx, "e1", "r1", "sent", 1000, 2000)
	require.NoError(t, err)
	require.Equal(t, map[string][]store.Point{`{"i":"a"}`: {{1000, 10}, {2000, 21}}, `{"i":"b"}`: {{1500, 5}}}, series,
		"sorted, bounds inclusive, the larger of a point recorded twice")
	ends, err := s.RunMetricEnds(ctx, "e1", "r1", "sent", "lag")
	require.NoError(t, err)
	require.Equal(t, []store.SeriesEnd{{Name: "lag", Labels: `{}`, LatestMs: 9000, Last: 7}, {Name: "sent", Labels: `{"i":"a"}`, LatestMs: 3000, Last: 30},
		{Name: "sent", Labels: `{"i":"b"}`, LatestMs: 1500, Last: 5}}, ends)
}

func TestReanalysisReplacesResults(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
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
	s, ctx := testenv.ParallelStore(t)
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "demo", State: events.ExperimentStateRunning, RunsTotal: 2}))
	require.NoError(t, s.UpsertExperiment(ctx, store.Experiment{ExperimentID: "e1", Name: "demo", State: events.ExperimentStateDone, RunsTotal: 2}))
	e, err := s.GetExperiment(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, events.ExperimentStateDone, e.State)
	_, err = s.GetExperiment(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)

	// Written out of order, as two goroutines may: the higher version wins.
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e1", RunID: "r1", Index: 0, State: events.RunStateDone, MeasureStartMs: 5, MeasureEndMs: 9, Version: 7}}))
	require.NoError(t, s.UpsertRuns(ctx, []store.Run{{ExperimentID: "e1", RunID: "r1", Index: 0, State: events.RunStateMeasuring, Version: 6},
		{ExperimentID: "e1", RunID: "r2", Index: 1, State: events.RunStatePending, Version: 8}}))
	runs, err := s.Runs(ctx, "e1")
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.Equal(t, events.RunStateDone, runs[0].State)
	require.Equal(t, int64(9), runs[0].MeasureEndMs)
}
