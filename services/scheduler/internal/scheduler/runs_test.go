package scheduler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// The run state machine, driven by the other services' answers (played by
// the harness's responders) and by the scheduler's clock.

func TestRunsFollowTheStateMachineOneAtATime(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	h.submit(ctx, "exp-a", 2)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-a"))

	runs, err := h.store.Runs(ctx, "exp-a")
	require.NoError(t, err)
	require.Len(t, runs, 4)
	want := []string{events.RunStateProvisioning, events.RunStateBaseline, events.RunStateWarmup, events.RunStateMeasuring,
		events.RunStateCooldown, events.RunStateTeardown, events.RunStateAnalyzing, events.RunStateDone}
	type span struct{ start, end int64 }
	var spans []span
	for _, r := range runs {
		require.Equal(t, events.RunStateDone, r.State)
		require.Equal(t, want, h.runStates(r.RunID), r.RunID)
		phases := phasesOf(t, r)
		require.Len(t, phases, 7)
		for i, p := range phases {
			require.Equal(t, want[i], p.Name)
			require.LessOrEqual(t, p.StartMs, p.EndMs, p.Name)
			if i > 0 {
				require.Equal(t, phases[i-1].EndMs, p.StartMs, "phases are contiguous")
			}
		}
		require.Equal(t, phases[3].StartMs, r.MeasureStartMs)
		require.Equal(t, phases[3].EndMs, r.MeasureEndMs)
		require.GreaterOrEqual(t, r.MeasureEndMs-r.MeasureStartMs, int64(150), "measured for at least the nominal phase")
		spans = append(spans, span{phases[0].StartMs, phases[6].EndMs})
	}
	// Concurrency 1: runs never overlap.
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		require.GreaterOrEqual(t, spans[i].start, spans[i-1].end)
	}
	// Repetitions interleave: each configuration once before any twice.
	first := map[string]bool{}
	for _, r := range runs[:2] {
		first[r.ConfigHash] = true
	}
	require.Len(t, first, 2)
}

func TestProvisioningFailureFailsOnlyThatRun(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) { h.fail = func(run string) bool { return strings.HasSuffix(run, "-r0000") } })
	ctx := context.Background()
	h.submit(ctx, "exp-f", 1)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-f"), "one run succeeded")
	runs, err := h.store.Runs(ctx, "exp-f")
	require.NoError(t, err)
	require.Equal(t, events.RunStateFailed, runs[0].State)
	require.Contains(t, runs[0].Reason, "image pull failed")
	require.Equal(t, events.RunStateDone, runs[1].State)
}

// requireFailed checks that run failed for reason and was retried as
// run-a1 or, when retried is false, not retried.
func requireFailed(t testing.TB, runs map[string]store.Run, run, reason string, retried bool) {
	t.Helper()
	require.Equal(t, events.RunStateFailed, runs[run].State)
	require.Contains(t, runs[run].Reason, reason)
	if retried {
		require.Contains(t, runs[run].Reason, "retried as "+run+"-a1")
	} else {
		require.NotContains(t, runs[run].Reason, "retried")
	}
}

// A transient provisioning failure (infrastructure that was down) is
// retried as a new run; a user's mistake is not.
func TestProvisionFailureRetriedOnlyWhenTransient(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, id, reason string
		transient        bool
	}{
		{"transient", "exp-pt", "create topics: dial tcp 127.0.0.1:9092: connection refused", true},
		{"permanent", "exp-pp", `image "nope:latest": pull access denied`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first := tc.id + "-r0000"
			h, _ := newHarness(t, nil, func(h *harness) {
				h.onProvide = only(first, func(m *events.RunProvision) []events.Message {
					return []events.Message{events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Transient: tc.transient,
						Reason: tc.reason}}
				})
			})
			runs := h.runDone(tc.id)
			requireFailed(t, runs, first, "provisioning failed: "+tc.reason, tc.transient)
			if !tc.transient {
				require.Len(t, runs, 2, "a user's mistake is not retried")
				return
			}
			require.Len(t, runs, 3)
			require.Equal(t, events.RunStateDone, runs[first+"-a1"].State)
		})
	}
}

func TestTransientFailureIsRetriedOnceAsANewRun(t *testing.T) {
	t.Parallel()
	// The first run's load fails every time; the second's never.
	h, _ := newHarness(t, nil, func(h *harness) { h.failLoad = func(run string) bool { return strings.HasPrefix(run, "exp-r-r0000") } })
	byID := h.runDone("exp-r")
	require.Len(t, byID, 3, "two runs and one retry; a retry is not retried again (retries=1)")
	requireFailed(t, byID, "exp-r-r0000", "load generator failed: 3 of 10 records not delivered", true)
	require.Equal(t, events.RunStateFailed, byID["exp-r-r0000-a1"].State)
	require.Equal(t, byID["exp-r-r0000"].ConfigHash, byID["exp-r-r0000-a1"].ConfigHash)
	require.Equal(t, events.RunStateDone, byID["exp-r-r0001"].State)
}

// A load the generators could not keep up with fails its run for good: a
// retry would fail the same way (a run at 2×10⁹ msg/s was retried three
// times as a transient timeout).
func TestLoadTheGeneratorsCannotKeepUpIsNotRetried(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) { h.overLoad = func(run string) bool { return run == "exp-k-r0000" } })
	byID := h.runDone("exp-k")
	require.Len(t, byID, 2, "two runs, no retry")
	requireFailed(t, byID, "exp-k-r0000", "load generator failed: load generators could not keep up with the offered load: 2000000000 msg/s offered, 600000 msg/s produced", false)
	require.Equal(t, events.RunStateDone, byID["exp-k-r0001"].State)
}

func TestCancelStopsLoadTearsDownAndCancelsPending(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	// A long measuring phase so the cancel lands mid-run.
	h.submitSpec(ctx, "exp-c", strings.Replace(fmt.Sprintf(specTmpl, 1), "measure: 150ms", "measure: 1h", 1))
	testenv.Eventually(t, 20*time.Second, "first run measuring", func() bool {
		return last(h.runStates("exp-c-r0000")) == events.RunStateMeasuring
	})
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: "exp-c", Reason: "operator"}, ""))
	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal("exp-c"))
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Contains(t, h.seen[events.TypeLoadStop], "exp-c-r0000")
	require.Contains(t, h.seen[events.TypeRunTeardown], "exp-c-r0000")
	require.NotContains(t, h.seen[events.TypeRunTeardown], "exp-c-r0001", "a pending run has nothing to tear down")
	require.Equal(t, events.RunStateCancelled, last(h.states["exp-c-r0000"]))
	require.Equal(t, events.RunStateCancelled, last(h.states["exp-c-r0001"]))
	// The provisioner keeps a mark of a started run only.
	require.False(t, h.neverStarted["exp-c-r0000"], "the measuring run had started")
	require.True(t, h.neverStarted["exp-c-r0001"], "the pending run never started")
}

func TestInvalidSpecIsRejectedAndNothingQueued(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	h.submitSpec(ctx, "exp-bad", "kind: Experiment\n")
	require.Equal(t, events.ExperimentStateFailed, h.waitFinal("exp-bad"))
	runs, err := h.store.Runs(ctx, "exp-bad")
	require.NoError(t, err)
	require.Empty(t, runs)
	// The id the submitter got is listed, failed, with the reason.
	st, ok := h.sched.Status("exp-bad")
	require.True(t, ok)
	require.Equal(t, events.ExperimentStateFailed, st.State)
	require.Contains(t, st.Reason, "invalid spec: ")
	require.Contains(t, listed(h.sched), "exp-bad")
	stored, err := h.store.GetExperiment(ctx, "exp-bad")
	require.NoError(t, err)
	require.Equal(t, events.ExperimentStateFailed, stored.State)
}

// TestDeadLetteredSubmissionIsListedAsFailed: a submission the consumer
// cannot even decode is dead-lettered; the experiment id in its headers
// still appears in list, failed, with the dead-letter reason.
func TestDeadLetteredSubmissionIsListedAsFailed(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	msg := nats.NewMsg(bus.Subject(events.TypeExperimentSubmit))
	msg.Header.Set(bus.HeaderType, string(events.TypeExperimentSubmit))
	msg.Header.Set(bus.HeaderVersion, "1")
	msg.Header.Set(bus.HeaderExperiment, "exp-undecodable")
	msg.Data = []byte(`{"experiment_id":"exp-undecodable"}`) // no spec
	_, err := h.bus.JetStream().PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, events.ExperimentStateFailed, h.waitFinal("exp-undecodable"))
	st, ok := h.sched.Status("exp-undecodable")
	require.True(t, ok)
	require.Equal(t, events.ExperimentStateFailed, st.State)
	require.Contains(t, st.Reason, "submission dead-lettered: undecodable")
	require.Contains(t, listed(h.sched), "exp-undecodable")
}

// TestLostSystemUnderTestFailsTheRun: the provisioner answers the
// teardown with "lost" (it has no record of the run, e.g. it restarted and
// its SUT died with it): nothing vouches for the measurement, so the run
// fails and is retried instead of going on to a done it has not earned.
func TestLostSystemUnderTestFailsTheRun(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) {
		h.onTeardown = only("exp-lost-r0000", func(m *events.RunTeardown) []events.Message {
			return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Lost: true,
				Reason: "no record of run exp-lost-r0000 on node n1 and no process marked with it"}}
		})
	})
	runs := h.runDone("exp-lost")
	require.Len(t, runs, 3)
	requireFailed(t, runs, "exp-lost-r0000", "system under test lost: the provisioner cannot vouch that it ran throughout: no record of run exp-lost-r0000", true)
	require.Equal(t, events.RunStateDone, runs["exp-lost-r0000-a1"].State)
	require.NotContains(t, h.runStates("exp-lost-r0000"), events.RunStateAnalyzing, "a lost run is never analysed")
}

// TestCrashWhileRemovalGoesOnFailsAtOnce: the provisioner reports a crash
// as soon as it sees it (Incomplete, since it is still removing the run) and
// only later the final report; the run fails at the first report, with the
// crash as its reason, not at the teardown timeout.
func TestCrashWhileRemovalGoesOnFailsAtOnce(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, func(c *scheduler.Config) { c.TeardownTimeout = time.Minute }, func(h *harness) {
		h.onTeardown = only("exp-cr-r0000", func(m *events.RunTeardown) []events.Message {
			return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Crashed: true, Incomplete: true,
				Reason: "exit status 137 (killed by signal 9); last output: heartbeat"}}
		})
	})
	start := time.Now()
	runs := h.runDone("exp-cr")
	require.Less(t, time.Since(start), time.Minute, "failed at the crash report, not at the teardown timeout")
	crashed := runs["exp-cr-r0000"]
	require.Equal(t, events.RunStateFailed, crashed.State)
	require.Contains(t, crashed.Reason, "system under test crashed: exit status 137")
	require.Equal(t, events.RunStateDone, runs["exp-cr-r0000-a1"].State)
}

// TestIncompleteTeardown: a teardown the provisioner reports as incomplete
// keeps the run waiting; one that then completes ends done, one that never
// does fails at the timeout with the provisioner's last cause in its reason
// (not just "not confirmed").
func TestIncompleteTeardown(t *testing.T) {
	t.Parallel()
	const forbidden = `delete namespace gf-exp-td-r0000: namespaces "gf-exp-td-r0000" is forbidden: User "system:serviceaccount:greenflow:provisioner" ` +
		`cannot delete resource "namespaces" (add verb delete on namespaces to deploy/base/provisioner-rbac.yaml)`
	h, _ := newHarness(t, func(c *scheduler.Config) { c.TeardownTimeout = 1500 * time.Millisecond }, func(h *harness) {
		h.onTeardown = func(m *events.RunTeardown) []events.Message {
			unreachable := events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Incomplete: true,
				Reason: "API server unreachable: connection refused"}
			switch m.RunID {
			case "exp-td-r0000": // never completes
				return []events.Message{unreachable, events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Incomplete: true, Reason: forbidden}}
			case "exp-td-r0001": // completes after a hiccup
				return []events.Message{unreachable, events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID}}
			}
			return []events.Message{} // the retry's teardown: no answer needed for this test
		}
	})
	h.submit(context.Background(), "exp-td", 1)
	h.waitFinal("exp-td")
	runs := h.runsByID("exp-td")
	stuck := runs["exp-td-r0000"]
	require.Equal(t, events.RunStateFailed, stuck.State)
	require.Contains(t, stuck.Reason, "teardown not confirmed within 1.5s: "+forbidden, "the last cause, not the first")
	require.Equal(t, events.RunStateDone, runs["exp-td-r0001"].State)
}

// TestLoadAccountReachesTheAnalyzer: load.finished's account (what the
// broker holds, what was missed or back-filled, take-overs, restarts) is
// kept on the run and handed to the analyzer in run.measured.
func TestLoadAccountReachesTheAnalyzer(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) {
		h.onLoad = func(m *events.LoadStart) []events.Message {
			now := time.Now().UnixMilli()
			return []events.Message{events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: "lg-a,lg-b", StartMs: now, EndMs: now,
				RecordsSent: 42, RecordsDelivered: 41, DeliveredFromBroker: true, RecordsMissed: 1, RecordsBackfilled: 7, Takeovers: 1, Restarts: 2,
				Reason: "lg-b died; counted as of its last report, its ranges were taken over"}}
		}
	})
	h.runDone("exp-acct")
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.measured["exp-acct-r0000"]
	require.True(t, ok)
	require.Equal(t, int64(42), m.RecordsSent)
	require.Equal(t, int64(41), m.RecordsDelivered)
	require.True(t, m.DeliveredFromBroker)
	require.Equal(t, int64(1), m.RecordsMissed)
	require.Equal(t, int64(7), m.RecordsBackfilled)
	require.Equal(t, 1, m.LoadTakeovers)
	require.Equal(t, 2, m.LoadRestarts)
	require.Equal(t, "lg-b died; counted as of its last report, its ranges were taken over", m.LoadNote)
}

// TestAnalysisVerdict: an invalid analysis fails the run (retried as a new
// run, with the analyzer's reason); a valid one with flags ends done and
// keeps its flags, which the status API shows.
func TestAnalysisVerdict(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) {
		h.onMeasured = func(m *events.RunMeasured) []events.Message {
			a := events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: time.Now().UnixMilli()}
			switch m.RunID {
			case "exp-v-r0000":
				a.Invalid, a.Flags = true, []string{"load_missed"}
				a.Reason = "offered load not delivered in the measured window: 1500 of 2000 events (75.0%, tolerance 2.0%) by the input topic's high-water marks"
			case "exp-v-r0001":
				a.Flags = []string{"energy_gap_bridged", "load_takeover"}
			}
			return []events.Message{a}
		}
	})
	runs := h.runDone("exp-v")
	require.Len(t, runs, 3)
	bad := runs["exp-v-r0000"]
	require.Equal(t, events.RunStateFailed, bad.State)
	require.True(t, strings.HasPrefix(bad.Reason, "invalid measurement: offered load not delivered in the measured window: 1500 of 2000 events"), bad.Reason)
	require.Contains(t, bad.Reason, "retried as exp-v-r0000-a1")
	require.Equal(t, events.RunStateDone, runs["exp-v-r0000-a1"].State)
	require.Equal(t, events.RunStateDone, runs["exp-v-r0001"].State)

	st, ok := h.sched.Status("exp-v")
	require.True(t, ok)
	flags := map[string][]string{}
	for _, r := range st.Runs {
		flags[r.RunID] = r.Flags
	}
	require.Equal(t, []string{"energy_gap_bridged", "load_takeover"}, flags["exp-v-r0001"])
	require.Equal(t, []string{"load_missed"}, flags["exp-v-r0000"])
	require.Empty(t, flags["exp-v-r0000-a1"])
}

// TestResentCommandIsNotSwallowedByDeduplication: the first teardown of a
// run reaches the provisioner but is lost there (as when it is
// dead-lettered while the API server is down). The scheduler's re-send must
// reach the provisioner — a message id of its own per attempt, which the
// stream's de-duplication does not drop — and the run must end done
// instead of failing at the teardown timeout.
func TestResentCommandIsNotSwallowedByDeduplication(t *testing.T) {
	t.Parallel()
	lost := 0
	h, _ := newHarness(t, func(c *scheduler.Config) {
		c.Resend = 300 * time.Millisecond
		c.TeardownTimeout = time.Minute
	}, func(h *harness) {
		h.onTeardown = only("exp-rs-r0000", func(m *events.RunTeardown) []events.Message {
			if lost == 0 {
				lost++
				return []events.Message{} // swallowed: no answer
			}
			return nil // answered
		})
	})
	runs := h.runDone("exp-rs")
	require.Equal(t, events.RunStateDone, runs["exp-rs-r0000"].State, runs["exp-rs-r0000"].Reason)
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := h.msgIDs[events.TypeRunTeardown]["exp-rs-r0000"]
	require.GreaterOrEqual(t, len(ids), 2, "the teardown was sent again")
	require.Equal(t, "teardown:exp-rs-r0000", ids[0])
	// The re-send's id is the command's with its attempt: ":1", or a later
	// one when a re-send's publish itself timed out on a loaded machine.
	require.Regexp(t, `^teardown:exp-rs-r0000:[1-9][0-9]*$`, ids[1], "the re-send has an id of its own")
}
