package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// TestRunRowsAreFinalWhenTheExperimentIs: the API answers an experiment's
// state from the scheduler's state bucket, and a user told "done" reads its
// runs from ClickHouse at once (greenflow results, compare, the console).
// Watching the bucket, the test reads the runs table the moment each of
// many experiments turns final there: every run row must already be final.
func TestRunRowsAreFinalWhenTheExperimentIs(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := h.bus.KV(ctx, scheduler.Bucket)
	require.NoError(t, err)
	w, err := kv.Watch(ctx, "exp.*", jetstream.UpdatesOnly())
	require.NoError(t, err)
	defer func() { _ = w.Stop() }()

	const n = 20
	for i := range n {
		h.submit(ctx, fmt.Sprintf("exp-rows-%02d", i), 1)
	}
	final := map[string]string{}
	var stale []string
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for len(final) < n {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-deadline.C:
			t.Fatalf("timed out with %d of %d experiments final: %v", len(final), n, final)
		}
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var rec scheduler.ExperimentRecord
		require.NoError(t, json.Unmarshal(e.Value(), &rec), "experiment record %s", e.Key())
		if !events.ExperimentFinal(rec.State) || final[rec.ID] != "" {
			continue
		}
		final[rec.ID] = rec.State
		// Read at once, as a user who polled the API would.
		runs, err := h.store.Runs(ctx, rec.ID)
		require.NoError(t, err)
		var states []string
		ok := len(runs) == len(rec.RunIDs)
		for _, r := range runs {
			states = append(states, r.RunID+"="+r.State)
			ok = ok && events.RunFinal(r.State)
		}
		if !ok {
			stale = append(stale, fmt.Sprintf("%s %s with %d runs, stored: %s", rec.ID, rec.State, len(rec.RunIDs), strings.Join(states, " ")))
		}
	}
	require.Empty(t, stale, "experiments whose runs table was not final when the experiment was")
	for id, st := range final {
		require.Equal(t, events.ExperimentStateDone, st, id)
	}
}

// TestExperimentEndsOnlyOnceItsRunRowsAreStored: with the runs table
// unwritable (renamed away, a real ClickHouse error) when the last run is
// analyzed, the experiment is not announced final — a user told "done"
// would find its runs unfinished — until the table is back; then it ends
// done with its runs stored final.
func TestExperimentEndsOnlyOnceItsRunRowsAreStored(t *testing.T) {
	t.Parallel()
	held := make(chan events.RunMeasured, 64) // redelivered commands too
	// Both runs at once, so both wait for the analysis together.
	h, _ := newHarness(t, func(c *scheduler.Config) { c.Concurrency = 2 }, func(h *harness) {
		h.onMeasured = func(m *events.RunMeasured) []events.Message {
			held <- *m
			return []events.Message{} // answered by the test
		}
	})
	ctx := context.Background()
	const id = "exp-rows-gone"
	h.submit(ctx, id, 1)
	measured := map[string]events.RunMeasured{}
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for len(measured) < 2 {
		select {
		case m := <-held:
			measured[m.RunID] = m
		case <-deadline.C:
			t.Fatalf("timed out waiting for both runs measured, have %d", len(measured))
		}
	}

	require.NoError(t, h.store.Conn().Exec(ctx, "RENAME TABLE runs TO runs_away"))
	for _, m := range measured {
		require.NoError(t, h.bus.Publish(ctx, events.RunAnalyzed{ExperimentID: id, RunID: m.RunID, TsMs: time.Now().UnixMilli()}, ""))
	}
	testenv.Eventually(t, 30*time.Second, "both runs done in the scheduler", func() bool {
		st, _ := h.sched.Status(id)
		return st.RunsDone == 2
	})
	// Every tick (5 ms here) finds the experiment finished and tries to end
	// it; for a second of them it must stay unfinished.
	window := time.NewTimer(time.Second)
	defer window.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for open := true; open; {
		select {
		case <-window.C:
			open = false
		case <-poll.C:
		}
		st, _ := h.sched.Status(id)
		require.False(t, events.ExperimentFinal(st.State), "experiment %s announced %s while its run rows could not be stored", id, st.State)
	}

	require.NoError(t, h.store.Conn().Exec(ctx, "RENAME TABLE runs_away TO runs"))
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(id))
	runs := h.runsByID(id)
	require.Len(t, runs, 2)
	for _, r := range runs {
		require.Equal(t, events.RunStateDone, r.State, r.RunID)
	}
}
