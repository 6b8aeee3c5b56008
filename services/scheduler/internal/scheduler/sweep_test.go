package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// editKey rewrites a JSON record in the state bucket, as a scheduler that
// died would have left it.
func editKey[T any](t testing.TB, kv jetstream.KeyValue, key string, edit func(*T)) {
	t.Helper()
	ctx := context.Background()
	e, err := kv.Get(ctx, key)
	require.NoError(t, err)
	var v T
	require.NoError(t, json.Unmarshal(e.Value(), &v))
	edit(&v)
	b, err := json.Marshal(v)
	require.NoError(t, err)
	_, err = kv.Update(ctx, key, b, e.Revision())
	require.NoError(t, err)
}

// A cancellation that a scheduler left half done — the experiment marked
// cancelled, the walk over its runs cut short by kill -9 after the first
// run, with no cancel left to redeliver — is finished by the next scheduler
// without a new cancel: the running run is stopped (load stopped, torn
// down) and cancelled, the pending ones cancelled without ever starting,
// every row stored, and the cancellation announced once. The state a
// scheduler from before the sweep leaves (no Cancelling) and the one this
// one leaves (Cancelling set) are both finished. An experiment that ended
// done and one that failed at submission are left as they are. Before, a
// cancelled experiment was never looked at again: its runs stayed pending
// and running, holding their slot, until a user cancelled again.
func TestCancellationLeftHalfDoneIsFinishedWithoutANewCancel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		cancelling bool
	}{{"walked by an older scheduler", false}, {"marked for the sweep", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			two := func(c *scheduler.Config) { c.Concurrency = 2 }
			h, _ := newHarness(t, two)
			ctx := context.Background()
			done, bad, id := "exp-hd-done", "exp-hd-bad", "exp-hd"
			h.runDone(done)
			h.submitSpec(ctx, bad, "kind: Experiment\n")
			require.Equal(t, events.ExperimentStateFailed, h.waitFinal(bad))

			h.submitSpec(ctx, id, longSpec(2)) // four runs, measuring for an hour
			testenv.Eventually(t, 30*time.Second, "two runs measuring", func() bool {
				return last(h.runStates(id+"-r0000")) == events.RunStateMeasuring && last(h.runStates(id+"-r0001")) == events.RunStateMeasuring
			})
			h.stopScheduler()

			// What the dead scheduler left: the experiment marked, the
			// first run cancelled, the second still measuring, two pending.
			kv, err := h.bus.KV(ctx, scheduler.Bucket)
			require.NoError(t, err)
			editKey(t, kv, "exp."+id, func(e *scheduler.ExperimentRecord) {
				e.State, e.Reason, e.Cancelling = events.ExperimentStateCancelled, "operator", tc.cancelling
			})
			editKey(t, kv, "run."+id+"-r0000", func(r *scheduler.RunRecord) {
				r.State, r.Reason = events.RunStateCancelled, "cancelled: operator"
			})
			h.mu.Lock()
			before := map[string]int{done: len(h.announced[done]), bad: len(h.announced[bad])}
			h.mu.Unlock()

			h.startScheduler(ctx, two) // no new cancel
			require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(id))
			testenv.Eventually(t, 30*time.Second, "the cancellation recorded as finished", func() bool {
				e, err := kv.Get(ctx, "exp."+id)
				require.NoError(t, err)
				var rec scheduler.ExperimentRecord
				require.NoError(t, json.Unmarshal(e.Value(), &rec))
				return !rec.Cancelling
			})

			st, ok := h.sched.Status(id)
			require.True(t, ok)
			require.Len(t, st.Runs, 4)
			for _, r := range st.Runs {
				require.Equal(t, events.RunStateCancelled, r.State, r.RunID)
			}
			require.Equal(t, 4, st.RunsCancelled)
			stored := h.runsByID(id)
			require.Len(t, stored, 4)
			for rid, r := range stored {
				require.Equal(t, events.RunStateCancelled, r.State, rid)
				require.Equal(t, "cancelled: operator", r.Reason, rid)
			}
			row, err := h.store.GetExperiment(ctx, id)
			require.NoError(t, err)
			require.Equal(t, events.ExperimentStateCancelled, row.State)

			h.mu.Lock()
			defer h.mu.Unlock()
			require.Contains(t, h.seen[events.TypeLoadStop], id+"-r0001", "the measuring run's load stopped")
			require.Contains(t, h.seen[events.TypeRunTeardown], id+"-r0001", "the measuring run torn down")
			for _, rid := range []string{id + "-r0002", id + "-r0003"} {
				require.NotContains(t, h.states[rid], events.RunStateProvisioning, rid)
				require.True(t, h.neverStarted[rid], rid)
			}
			cancelled := slices.DeleteFunc(slices.Clone(h.announced[id]), func(a events.ExperimentState) bool {
				return a.State != events.ExperimentStateCancelled
			})
			require.Len(t, cancelled, 1, "announced once")
			require.Equal(t, 4, cancelled[0].RunsTotal)
			require.Zero(t, cancelled[0].RunsDone+cancelled[0].RunsFailed)

			require.Equal(t, events.ExperimentStateDone, h.final[done])
			require.Equal(t, events.ExperimentStateFailed, h.final[bad])
			require.Len(t, h.announced[done], before[done], "the done experiment announced nothing more")
			require.Len(t, h.announced[bad], before[bad], "the failed submission announced nothing more")
		})
	}
}

// While a cancel of a large sweep is being carried out, the scheduler's
// consumer keeps handling other experiments' messages: an experiment
// submitted right after the cancel is accepted, runs (the sweep stops the
// sweep's running run first, which frees the cluster's slot) and ends done
// before the sweep's cancellation has finished. Before, the cancel's
// handler walked all the sweep's runs while every other message waited
// behind it, so the small experiment was not even accepted until the
// cancellation had been announced.
func TestALargeCancelHoldsUpNoOtherExperiment(t *testing.T) {
	t.Parallel()
	const sweepSize = 4000
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	sweep := strings.Replace(longSpec(1), `values: ["10", "20"]`, fmt.Sprintf("range: {from: 1, to: %d, step: 1}", sweepSize), 1)
	big := submitAccepted(t, url, "?yes=true", []byte(sweep))
	testenv.Eventually(t, 2*time.Minute, "the sweep's first run measuring", func() bool {
		return last(h.runStates(big.ID+"-r0000")) == events.RunStateMeasuring
	})

	require.Equal(t, http.StatusAccepted, cancel(t, url, big.ID))
	small := submitAccepted(t, url, "", []byte(strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, `values: ["10"]`, 1)))
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(small.ID))
	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(big.ID))

	h.mu.Lock()
	order := slices.Clone(h.order)
	h.mu.Unlock()
	smallDone := slices.Index(order, small.ID+" "+events.ExperimentStateDone)
	bigCancelled := slices.Index(order, big.ID+" "+events.ExperimentStateCancelled)
	require.Less(t, smallDone, bigCancelled, "the small experiment ended before the sweep's cancellation: %v", order)
	st, ok := h.sched.Status(big.ID)
	require.True(t, ok)
	require.Equal(t, sweepSize, st.RunsCancelled)
	t.Logf("experiment states in order: %v", order)
}

// A capacity search cancelled while a probe's run waits for its analysis
// ends cancelled with that run cancelled, and probes no further: no next
// load level is planned, no capacity concluded.
func TestCancelledCapacitySearchProbesNoFurther(t *testing.T) {
	t.Parallel()
	held := make(chan struct{})
	var once sync.Once
	h, _ := newHarness(t, nil, func(h *harness) {
		h.capacity = 7300
		h.onMeasured = func(m *events.RunMeasured) []events.Message {
			if m.OfferedRate < 2000 {
				return nil
			}
			once.Do(func() { close(held) })
			return []events.Message{} // the analysis never answers
		}
	})
	ctx := context.Background()
	id := "exp-cs"
	h.submitSpec(ctx, id, capacitySpec)
	testenv.Receive(t, held, 30*time.Second, "the second probe's run analysed")
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: id, Reason: "operator"}, ""))
	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(id))

	st, ok := h.sched.Status(id)
	require.True(t, ok)
	require.Len(t, st.Runs, 2, "the probes at 1000 and 2000 msg/s only")
	require.Equal(t, events.RunStateDone, st.Runs[0].State)
	require.Equal(t, events.RunStateCancelled, st.Runs[1].State)
	require.Empty(t, experimentResults(t, h, id), "no capacity concluded")
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.msgIDs[events.TypeRunProvision], 2, "no further probe provisioned")
	states := []string{}
	for _, a := range h.announced[id] {
		states = append(states, a.State)
	}
	require.Equal(t, events.ExperimentStateCancelled, last(states), "%v", states)
	require.Equal(t, 1, countOf(states, events.ExperimentStateCancelled), "announced cancelled once: %v", states)
}

// countOf counts x in s.
func countOf(s []string, x string) int {
	n := 0
	for _, y := range s {
		if y == x {
			n++
		}
	}
	return n
}
