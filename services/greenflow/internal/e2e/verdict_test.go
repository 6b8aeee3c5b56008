package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
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
	sets := []string{"spec.phases.baseline=1s", "spec.phases.warmup=1s", "spec.phases.measure=5s", "spec.phases.cooldown=0s",
		"spec.meters.interval=200ms"}
	id, n := submitExample(ctx, t, b, sets)
	require.Equal(t, 2, n)
	obs := observe(ctx, t, b, id)
	victim := id + "-r0000"

	// Stop its load once the generator has reported progress a second into
	// the measured window.
	var mu sync.Mutex
	var measuringAt int64
	progressed := false
	go func() {
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunState, events.TypeLoadProgress}, func(d bus.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			switch m := d.Msg.(type) {
			case *events.RunState:
				if m.RunID == victim && m.State == "measuring" {
					measuringAt = m.TsMs
				}
			case *events.LoadProgress:
				if m.RunID == victim && measuringAt > 0 && m.TsMs >= measuringAt+1000 {
					progressed = true
				}
			}
		})
	}()
	testenv.Eventually(t, 2*time.Minute, "the first run's load a second into its measured window", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return progressed
	})
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: id, RunID: victim}, "test-stop:"+victim))

	testenv.Eventually(t, 3*time.Minute, "experiment to finish", func() bool { return obs.state() != "" })
	require.Equal(t, "done", obs.state())
	rows, err := cli.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	byID := map[string]cli.ResultRow{}
	for _, r := range rows {
		t.Logf("run %s: %s, %.0f of %.0f events offered in the window, flags %v %s", r.RunID, r.State, r.Metrics["events"],
			r.Metrics["events_offered"], r.Flags, r.Reason)
		byID[r.RunID] = r
	}

	stopped := byID[victim]
	require.Equal(t, "failed", stopped.State)
	require.Contains(t, stopped.Reason, "invalid measurement: offered load not delivered in the measured window")
	require.Contains(t, stopped.Reason, "(retried as "+victim+"-a1)")
	require.Equal(t, 1.0, stopped.Metrics["invalid"], "its results are kept, marked invalid")
	require.Less(t, stopped.Metrics["events"], 0.6*stopped.Metrics["events_offered"])
	obs.mu.Lock()
	fin := obs.finished[victim]
	analyzed := obs.analyzed[victim]
	obs.mu.Unlock()
	require.False(t, fin.Failed, "a stopped load is not a failed one: only the analysis can tell the window lacks it")
	require.Contains(t, fin.Reason, "stopped")
	require.True(t, analyzed.Invalid)

	for _, rid := range []string{victim + "-a1", id + "-r0001"} {
		r, ok := byID[rid]
		require.True(t, ok, "run %s stored", rid)
		if r.State == "failed" {
			// Only a load starved by this shared machine, which both counts
			// show, may fail an untouched run (see the end-to-end test).
			require.Contains(t, r.Reason, "offered load not delivered", rid)
			require.True(t, shortOfOffer(r, r.Metrics["events_acknowledged"]), rid)
			continue
		}
		require.Equal(t, "done", r.State, rid)
		require.Empty(t, r.Flags, rid)
		require.InDelta(t, r.Metrics["events_offered"], r.Metrics["events"], loadTolerance(r), rid)
	}
	// Statistics count only valid runs: the stopped one is left out.
	for _, s := range cli.SummarizeRuns(rows, cli.DefaultLevel) {
		require.NotContains(t, s.RunIDs, victim)
	}
}
