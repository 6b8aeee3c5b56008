package e2e

// Faults injected mid-run: the experiment must still end with every run
// accounted for, and a run whose measurement the fault spoiled must fail
// with the reason and be retried.

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestSchedulerKill9MidRunResumes kills the scheduler process with SIGKILL
// while the first run is measuring, starts it again, and checks that the
// experiment finishes with every run done exactly once: none lost, none
// duplicated, each provisioned, measured and analyzed once.
func TestSchedulerKill9MidRunResumes(t *testing.T) {
	ctx, st, b := startStack(t, 4*time.Minute, "scheduler")
	startScheduler := func() *process {
		return startProcess(t, "scheduler", "--nats-url", st.Endpoints.NATSURL,
			"--nats-nkey-file", devstack.NATSCreds(st.StateDir(), "scheduler").NKeyFile, "--clickhouse-dsn", st.Endpoints.ClickHouseDSN,
			"--kafka-brokers", st.Endpoints.KafkaBrokers[0], "--metrics-addr", "", "--log-level", "warn")
	}
	first := startScheduler()

	commands := []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunMeasured, events.TypeRunAnalyzed}
	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "5s"), append(commands, events.TypeRunState)...)
	firstRun := id + "-r0000"
	testenv.Eventually(t, time.Minute, "first run measuring", func() bool {
		return last(obs.RunStates(firstRun)) == events.RunStateMeasuring
	})
	exited, _ := first.stop(syscall.SIGKILL, time.Minute) // no drain, no goodbye
	require.True(t, exited, "the killed scheduler exited")
	startScheduler()

	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 3*time.Minute, nil), "after the restart")
	requireEveryRunDoneOnce(ctx, t, st.Store, id, n, obs, commands, firstRun)
}

// requireEveryRunDoneOnce checks what a fault must not change: the
// experiment has its n runs, each done with energy measured (or failed on
// a load the machine starved and retried as one new run), each command
// stored once (duplicates are dropped by Nats-Msg-Id), and the first run
// went through every phase once.
func requireEveryRunDoneOnce(ctx context.Context, t *testing.T, st *store.Store, id string, n int, obs *devstacktest.Observer,
	commands []events.Type, firstRun string) {
	t.Helper()
	rows, err := report.LoadResults(ctx, st, id)
	require.NoError(t, err)
	retried := 0
	final := map[string]string{}
	for _, r := range rows {
		final[r.RunID] = r.State
		if !requireDoneUnlessStarved(t, r) {
			retried++
		}
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		for _, typ := range commands {
			require.Equal(t, 1, obs.Count(typ, r.RunID), "%s of %s stored once", typ, r.RunID)
		}
	}
	require.Len(t, rows, n+retried, "no run lost or added")
	require.Equal(t, []string{events.RunStateProvisioning, events.RunStateBaseline, events.RunStateWarmup, events.RunStateMeasuring,
		events.RunStateCooldown, events.RunStateTeardown, events.RunStateAnalyzing, final[firstRun]}, obs.RunStates(firstRun),
		"%s went through every phase once", firstRun)
}

// last is the last of states; "" when there is none.
func last(states []string) string {
	if len(states) == 0 {
		return ""
	}
	return states[len(states)-1]
}

// TestLoadStoppedMidMeasuringFailsAndRetriesTheRun injects a fault through
// the dev stack: the load generator of the first run is told to stop
// (load.stop) a second into the measured window. The run still goes
// through cool-down, teardown and analysis — nothing else is wrong — but
// its window lacks most of the offered load, so the analyzer must judge it
// invalid and the scheduler fail it with that reason and retry it as a new
// run, which ends done like the untouched second run.
func TestLoadStoppedMidMeasuringFailsAndRetriesTheRun(t *testing.T) {
	ctx, st, b := startStack(t, 4*time.Minute)
	stalled := testenv.StallWatch(t)
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
	rows, err := report.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	byID := map[string]report.ResultRow{}
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
		requireCleanData(t, rid, r.Flags, stalled())
		require.InDelta(t, r.Metrics["events_offered"], r.Metrics["events"], loadTolerance(r), rid)
	}
	// Statistics count only valid runs: the stopped one is left out.
	for _, s := range report.SummarizeRuns(rows, report.DefaultLevel) {
		require.NotContains(t, s.RunIDs, victim)
	}
}
