package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// A transient failure's retry waits out its back-off: a broker that is
// down for a few seconds must not fail the retry too. The scheduler's
// clock is driven by hand, so "not before its delay" is exact.
func TestRetryWaitsOutItsBackoff(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakeClock(start)
	h, _ := newHarness(t, func(c *scheduler.Config) { c.RetryBackoff, c.RetryBackoffMax = 5*time.Second, time.Minute },
		func(h *harness) { h.clock = clock })
	const id = "exp-backoff"
	first := id + "-r0000"
	h.failLoad = func(rid string) bool { return rid == first } // the broker is "down" for the first attempt only
	retryID := first + "-a1"
	h.submitSpec(context.Background(), id, strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, `values: ["10"]`, 1))

	// Run the first attempt to its failure; the retry is created pending,
	// its record saying when it may start.
	var retry, failedRun scheduler.RunStatus
	ticksUntil(t, clock, start, "first attempt failed and its retry created", func() bool {
		st, ok := h.sched.Status(id)
		if !ok {
			return false
		}
		for _, r := range st.Runs {
			switch r.RunID {
			case retryID:
				retry = r
			case first:
				failedRun = r
			}
		}
		// The retry is created first, then named on the failed run.
		return retry.RunID != "" && strings.Contains(failedRun.Reason, "(retried as")
	})
	require.Equal(t, events.RunStatePending, retry.State)
	require.Equal(t, events.RunStateFailed, failedRun.State)
	require.Contains(t, failedRun.Reason, "(retried as "+retryID+") after a 5s back-off")
	failedAt := failedRun.Phases[len(failedRun.Phases)-1].EndMs
	require.NotZero(t, retry.StartsMs, "the retry's record says when it will start")
	require.GreaterOrEqual(t, retry.StartsMs, failedAt+5000, "the retry starts no sooner than 5 s after the failure")
	require.Less(t, retry.StartsMs, failedAt+6000)

	// Many ticks up to 1 ms before its start: the retry stays pending and
	// is never provisioned.
	clock.SetTime(time.UnixMilli(retry.StartsMs - 400))
	polls := 0
	testenv.Eventually(t, 10*time.Second, "ticks before the back-off ends", func() bool {
		polls++
		if clock.Now().Add(5*time.Millisecond).UnixMilli() < retry.StartsMs {
			clock.Step(5 * time.Millisecond)
		}
		return polls > 60
	})
	require.Less(t, clock.Now().UnixMilli(), retry.StartsMs)
	require.Empty(t, h.runStates(retryID), "a retry provisioned before its back-off ended")
	st, _ := h.sched.Status(id)
	require.Equal(t, events.ExperimentStateRunning, st.State, "the experiment waits for its retry")

	// Once the back-off is over it starts and the experiment ends done.
	ticksUntil(t, clock, time.UnixMilli(retry.StartsMs), "the retry to be provisioned",
		func() bool { return slices.Contains(h.runStates(retryID), events.RunStateProvisioning) })
	ticksUntil(t, clock, clock.Now(), "the experiment to end", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.final[id] != ""
	})
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(id))
	require.Equal(t, events.RunStateDone, last(h.runStates(retryID)))
}

// Attempt n waits RetryBackoff·2^(n-1), capped; 0 retries at once.
func TestRetryDelayDoublesUpToItsCap(t *testing.T) {
	t.Parallel()
	cfg := scheduler.Default()
	require.Equal(t, 5*time.Second, cfg.RetryBackoff)
	got := []time.Duration{}
	for n := 1; n <= 6; n++ {
		got = append(got, scheduler.RetryDelay(cfg, n))
	}
	require.Equal(t, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}, got)
	cfg.RetryBackoff = 0
	require.Equal(t, time.Duration(0), scheduler.RetryDelay(cfg, 3))
	cfg.RetryBackoff, cfg.RetryBackoffMax = time.Minute, time.Second
	cfg.Brokers = []string{"b:9092"}
	require.ErrorContains(t, cfg.Validate(), "scheduler.retryBackoffMax")
}

// TestALateSchedulerKeepsTheWindowWhereTheLoadIs: the scheduler gets to a
// run in warm-up only well after its warm-up was due to end (it was down,
// or stalled). The measured window still begins when the warm-up was due
// to end, and lasts the measure phase — where the load, started with the
// warm-up, is — instead of sliding past the load's end.
func TestALateSchedulerKeepsTheWindowWhereTheLoadIs(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakeClock(start)
	h, _ := newHarness(t, nil, func(h *harness) { h.clock = clock })
	const id = "exp-late"
	h.submitSpec(context.Background(), id, strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, `values: ["10"]`, 1))
	var warm events.Phase
	ticksUntil(t, clock, start, "the run in warm-up", func() bool {
		st, ok := h.sched.Status(id)
		if !ok || len(st.Runs) == 0 || st.Runs[0].State != events.RunStateWarmup {
			return false
		}
		warm = st.Runs[0].Phases[len(st.Runs[0].Phases)-1]
		return true
	})
	// Late: 2 s past the warm-up's 50 ms before the next tick.
	clock.SetTime(time.UnixMilli(warm.StartMs).Add(2 * time.Second))
	var measure events.Phase
	testenv.Eventually(t, 10*time.Second, "the measured window recorded", func() bool {
		clock.Step(testConfig(nil).Tick)
		st, _ := h.sched.Status(id)
		for _, p := range st.Runs[0].Phases {
			if p.Name == events.RunStateMeasuring && p.EndMs > 0 {
				measure = p
				return true
			}
		}
		return false
	})
	require.Equal(t, warm.StartMs+50, measure.StartMs, "the window begins when the warm-up was due to end")
	require.Equal(t, measure.StartMs+150, measure.EndMs, "and lasts the measure phase")
}
