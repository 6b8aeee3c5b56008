package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestLoadStoppedMidMeasuringFailsAndRetriesTheRun injects a fault through
// the dev stack: the load generator of the first run is told to stop
// (load.stop) a second into the measured window. The run still goes
// through cool-down, teardown and analysis — nothing else is wrong — but
// its window lacks most of the offered load, so the analyzer must judge it
// invalid and the scheduler fail it with that reason and retry it as a new
// run, which ends done like the untouched second run.
func TestLoadStoppedMidMeasuringFailsAndRetriesTheRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, b := startStack(t)
	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "5s"), events.TypeRunState, events.TypeLoadProgress, events.TypeLoadFinished,
		events.TypeRunAnalyzed)
	require.Equal(t, 2, n)
	victim := id + "-r0000"

	// Stop its load once the generator has reported progress a second into
	// the measured window.
	testenv.Eventually(t, 2*time.Minute, "the first run's load a second into its measured window", func() bool {
		var measuringAt int64
		for _, m := range devstacktest.All[*events.RunState](obs) {
			if m.RunID == victim && m.State == events.RunStateMeasuring {
				measuringAt = m.TsMs
			}
		}
		for _, m := range devstacktest.All[*events.LoadProgress](obs) {
			if m.RunID == victim && measuringAt > 0 && m.TsMs >= measuringAt+1000 {
				return true
			}
		}
		return false
	})
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: id, RunID: victim}, "test-stop:"+victim))

	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 3*time.Minute, nil))
	rows, err := cli.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	byID := map[string]cli.ResultRow{}
	for _, r := range rows {
		t.Logf("run %s: %s, %.0f of %.0f events offered in the window, flags %v %s", r.RunID, r.State, r.Metrics["events"],
			r.Metrics["events_offered"], r.Flags, r.Reason)
		byID[r.RunID] = r
	}

	stopped := byID[victim]
	require.Equal(t, events.RunStateFailed, stopped.State)
	require.Contains(t, stopped.Reason, "invalid measurement: offered load not delivered in the measured window")
	require.Contains(t, stopped.Reason, "(retried as "+victim+"-a1)")
	require.Equal(t, 1.0, stopped.Metrics["invalid"], "its results are kept, marked invalid")
	require.Less(t, stopped.Metrics["events"], 0.6*stopped.Metrics["events_offered"])
	fin, ok := devstacktest.Last[*events.LoadFinished](obs, victim)
	require.True(t, ok, "the stopped run's load.finished")
	analyzed, ok := devstacktest.Last[*events.RunAnalyzed](obs, victim)
	require.True(t, ok, "the stopped run's run.analyzed")
	require.False(t, fin.Failed, "a stopped load is not a failed one: only the analysis can tell the window lacks it")
	require.Contains(t, fin.Reason, "stopped")
	require.True(t, analyzed.Invalid)

	for _, rid := range []string{victim + "-a1", id + "-r0001"} {
		r, ok := byID[rid]
		require.True(t, ok, "run %s stored", rid)
		if r.State == events.RunStateFailed {
			// Only a load starved by this shared machine, which both counts
			// show, may fail an untouched run (see the end-to-end test).
			require.Contains(t, r.Reason, "offered load not delivered", rid)
			require.True(t, shortOfOffer(r, r.Metrics["events_acknowledged"]), rid)
			continue
		}
		require.Equal(t, events.RunStateDone, r.State, rid)
		require.Empty(t, r.Flags, rid)
		require.InDelta(t, r.Metrics["events_offered"], r.Metrics["events"], loadTolerance(r), rid)
	}
	// Statistics count only valid runs: the stopped one is left out.
	for _, s := range cli.SummarizeRuns(rows, cli.DefaultLevel) {
		require.NotContains(t, s.RunIDs, victim)
	}
}
