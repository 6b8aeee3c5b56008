package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// runsByID reads an experiment's stored runs by id.
func (h *harness) runsByID(id string) map[string]store.Run {
	h.t.Helper()
	runs, err := h.store.Runs(context.Background(), id)
	require.NoError(h.t, err)
	out := map[string]store.Run{}
	for _, r := range runs {
		out[r.RunID] = r
	}
	return out
}

// only answers for the one run id, leaving every other to the default.
func only[M interface{ IDs() (string, string) }](runID string, reply func(m M) []events.Message) func(M) []events.Message {
	return func(m M) []events.Message {
		if _, run := m.IDs(); run == runID {
			return reply(m)
		}
		return nil
	}
}

func TestTransientProvisionFailureIsRetriedAsANewRun(t *testing.T) {
	h, cancel := newHarness(t, nil, func(h *harness) {
		h.onProvide = only("exp-pt-r0000", func(m *events.RunProvision) []events.Message {
			return []events.Message{events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Transient: true,
				Reason: "create topics: dial tcp 127.0.0.1:9092: connection refused"}}
		})
	})
	defer cancel()
	h.submit(context.Background(), "exp-pt", 1)
	require.Equal(t, "done", h.waitFinal("exp-pt"))
	runs := h.runsByID("exp-pt")
	require.Len(t, runs, 3)
	require.Equal(t, "failed", runs["exp-pt-r0000"].State)
	require.Contains(t, runs["exp-pt-r0000"].Reason, "provisioning failed: create topics: dial tcp 127.0.0.1:9092: connection refused")
	require.Contains(t, runs["exp-pt-r0000"].Reason, "retried as exp-pt-r0000-a1")
	require.Equal(t, "done", runs["exp-pt-r0000-a1"].State)
}

func TestPermanentProvisionFailureIsNotRetried(t *testing.T) {
	h, cancel := newHarness(t, nil, func(h *harness) {
		h.onProvide = only("exp-pp-r0000", func(m *events.RunProvision) []events.Message {
			return []events.Message{events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID,
				Reason: `image "nope:latest": pull access denied`}}
		})
	})
	defer cancel()
	h.submit(context.Background(), "exp-pp", 1)
	require.Equal(t, "done", h.waitFinal("exp-pp"))
	runs := h.runsByID("exp-pp")
	require.Len(t, runs, 2, "a user's mistake is not retried")
	require.Equal(t, "failed", runs["exp-pp-r0000"].State)
	require.NotContains(t, runs["exp-pp-r0000"].Reason, "retried")
}

// TestLostSystemUnderTestFailsTheRun: the provisioner answers the
// teardown with "lost" (it has no record of the run, e.g. it restarted and
// its SUT died with it): nothing vouches for the measurement, so the run
// fails and is retried instead of going on to a done it has not earned.
func TestLostSystemUnderTestFailsTheRun(t *testing.T) {
	h, cancel := newHarness(t, nil, func(h *harness) {
		h.onTeardown = only("exp-lost-r0000", func(m *events.RunTeardown) []events.Message {
			return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Lost: true,
				Reason: "no record of run exp-lost-r0000 on node n1 and no process marked with it"}}
		})
	})
	defer cancel()
	h.submit(context.Background(), "exp-lost", 1)
	require.Equal(t, "done", h.waitFinal("exp-lost"))
	runs := h.runsByID("exp-lost")
	require.Len(t, runs, 3)
	lost := runs["exp-lost-r0000"]
	require.Equal(t, "failed", lost.State)
	require.Contains(t, lost.Reason, "system under test lost: the provisioner cannot vouch that it ran throughout: no record of run exp-lost-r0000")
	require.Contains(t, lost.Reason, "retried as exp-lost-r0000-a1")
	require.Equal(t, "done", runs["exp-lost-r0000-a1"].State)
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotContains(t, h.states["exp-lost-r0000"], "analyzing", "a lost run is never analysed")
}

// TestCrashWhileRemovalGoesOnFailsAtOnce: the provisioner reports a crash
// as soon as it sees it (Incomplete, since it is still removing the run) and
// only later the final report; the run fails at the first report, with the
// crash as its reason, not at the teardown timeout.
func TestCrashWhileRemovalGoesOnFailsAtOnce(t *testing.T) {
	h, cancel := newHarness(t, func(c *scheduler.Config) { c.TeardownTimeout = time.Minute }, func(h *harness) {
		h.onTeardown = only("exp-cr-r0000", func(m *events.RunTeardown) []events.Message {
			return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Crashed: true, Incomplete: true,
				Reason: "exit status 137 (killed by signal 9); last output: heartbeat"}}
		})
	})
	defer cancel()
	start := time.Now()
	h.submit(context.Background(), "exp-cr", 1)
	require.Equal(t, "done", h.waitFinal("exp-cr"))
	require.Less(t, time.Since(start), time.Minute, "failed at the crash report, not at the teardown timeout")
	runs := h.runsByID("exp-cr")
	crashed := runs["exp-cr-r0000"]
	require.Equal(t, "failed", crashed.State)
	require.Contains(t, crashed.Reason, "system under test crashed: exit status 137")
	require.Equal(t, "done", runs["exp-cr-r0000-a1"].State)
}

// TestIncompleteTeardown: a teardown the provisioner reports as incomplete
// keeps the run waiting; one that then completes ends done, one that never
// does fails at the timeout with the provisioner's last cause in its reason
// (not just "not confirmed").
func TestIncompleteTeardown(t *testing.T) {
	const forbidden = `delete namespace gf-exp-td-r0000: namespaces "gf-exp-td-r0000" is forbidden: User "system:serviceaccount:greenflow:provisioner" ` +
		`cannot delete resource "namespaces" (add verb delete on namespaces to deploy/base/provisioner-rbac.yaml)`
	h, cancel := newHarness(t, func(c *scheduler.Config) { c.TeardownTimeout = 1500 * time.Millisecond }, func(h *harness) {
		h.onTeardown = func(m *events.RunTeardown) []events.Message {
			switch m.RunID {
			case "exp-td-r0000": // never completes
				return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Incomplete: true,
					Reason: "API server unreachable: connection refused"},
					events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Incomplete: true, Reason: forbidden}}
			case "exp-td-r0001": // completes after a hiccup
				return []events.Message{events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Incomplete: true,
					Reason: "API server unreachable: connection refused"},
					events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID}}
			}
			return []events.Message{} // the retry's teardown: no answer needed for this test
		}
	})
	defer cancel()
	h.submit(context.Background(), "exp-td", 1)
	h.waitFinal("exp-td")
	runs := h.runsByID("exp-td")
	stuck := runs["exp-td-r0000"]
	require.Equal(t, "failed", stuck.State)
	require.Contains(t, stuck.Reason, "teardown not confirmed within 1.5s: "+forbidden, "the last cause, not the first")
	require.Equal(t, "done", runs["exp-td-r0001"].State)
}

// TestLoadAccountReachesTheAnalyzer: load.finished's account (what the
// broker holds, what was missed or back-filled, take-overs, restarts) is
// kept on the run and handed to the analyzer in run.measured.
func TestLoadAccountReachesTheAnalyzer(t *testing.T) {
	h, cancel := newHarness(t, nil, func(h *harness) {
		h.onLoad = func(m *events.LoadStart) []events.Message {
			now := time.Now().UnixMilli()
			return []events.Message{events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: "lg-a,lg-b", StartMs: now, EndMs: now,
				RecordsSent: 42, RecordsDelivered: 41, DeliveredFromBroker: true, RecordsMissed: 1, RecordsBackfilled: 7, Takeovers: 1, Restarts: 2,
				Reason: "lg-b died; counted as of its last report, its ranges were taken over"}}
		}
	})
	defer cancel()
	h.submit(context.Background(), "exp-acct", 1)
	require.Equal(t, "done", h.waitFinal("exp-acct"))
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
	h, cancel := newHarness(t, nil, func(h *harness) {
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
	defer cancel()
	h.submit(context.Background(), "exp-v", 1)
	require.Equal(t, "done", h.waitFinal("exp-v"))
	runs := h.runsByID("exp-v")
	require.Len(t, runs, 3)
	bad := runs["exp-v-r0000"]
	require.Equal(t, "failed", bad.State)
	require.True(t, strings.HasPrefix(bad.Reason, "invalid measurement: offered load not delivered in the measured window: 1500 of 2000 events"), bad.Reason)
	require.Contains(t, bad.Reason, "retried as exp-v-r0000-a1")
	require.Equal(t, "done", runs["exp-v-r0000-a1"].State)
	require.Equal(t, "done", runs["exp-v-r0001"].State)

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
	lost := 0
	h, cancel := newHarness(t, func(c *scheduler.Config) {
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
	defer cancel()
	h.submit(context.Background(), "exp-rs", 1)
	require.Equal(t, "done", h.waitFinal("exp-rs"))
	runs := h.runsByID("exp-rs")
	require.Equal(t, "done", runs["exp-rs-r0000"].State, runs["exp-rs-r0000"].Reason)
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := h.msgIDs[events.TypeRunTeardown]["exp-rs-r0000"]
	require.GreaterOrEqual(t, len(ids), 2, "the teardown was sent again")
	require.Equal(t, "teardown:exp-rs-r0000", ids[0])
	require.Equal(t, "teardown:exp-rs-r0000:1", ids[1], "the re-send has an id of its own")
}

// failingCreate is the scheduler's real state bucket, except that the
// first create of each key in fail returns an error.
type failingCreate struct {
	jetstream.KeyValue
	mu     sync.Mutex
	fail   map[string]bool
	failed []string
}

func (f *failingCreate) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	f.mu.Lock()
	if f.fail[key] {
		delete(f.fail, key)
		f.failed = append(f.failed, key)
		f.mu.Unlock()
		return 0, errors.New("injected: kv create failed")
	}
	f.mu.Unlock()
	return f.KeyValue.Create(ctx, key, value, opts...)
}

// TestCapacitySearchSurvivesAFailedProbeCreate fails the creation of the
// second probe's run once. The search must not be left listing a run that
// does not exist ("running" forever): the step fails as a whole and the
// next tick repeats it, and the search ends as it does without the fault.
func TestCapacitySearchSurvivesAFailedProbeCreate(t *testing.T) {
	kv := &failingCreate{fail: map[string]bool{"run.exp-fc-r0001": true}}
	h, cancel := newHarness(t, nil, func(h *harness) {
		h.capacity = 7300
		h.wrapKV = func(b jetstream.KeyValue) jetstream.KeyValue { kv.KeyValue = b; return kv }
	})
	defer cancel()
	ctx := context.Background()
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-fc", Spec: capacitySpec}, ""))
	require.Equal(t, "done", h.waitFinal("exp-fc"))
	kv.mu.Lock()
	require.Equal(t, []string{"run.exp-fc-r0001"}, kv.failed, "the fault was injected")
	kv.mu.Unlock()
	runs := h.runsByID("exp-fc")
	require.Len(t, runs, 8, "the same probes as without the fault")
	for id, r := range runs {
		require.Equal(t, "done", r.State, id)
	}
	res, err := h.store.Results(ctx, "exp-fc")
	require.NoError(t, err)
	for _, r := range res {
		if r.Scope == "experiment" && r.Metric == "capacity_msg_per_s" {
			require.Equal(t, 7250.0, r.Value)
			return
		}
	}
	t.Fatal("no capacity result")
}

// TestConcurrencyLimitHoldsAcrossSchedulers runs two scheduler instances on
// one NATS with the default limit of one active run. They share the
// submissions and events, and both start pending runs; the runs' recorded
// phases must never overlap. A second experiment on the same cluster,
// submitted meanwhile, shares the limit too.
func TestConcurrencyLimitHoldsAcrossSchedulers(t *testing.T) {
	slow := strings.Replace(specTmpl, "measure: 150ms", "measure: 400ms", 1)
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h.startScheduler(ctx, nil) // the second instance
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-cc1", Spec: fmt.Sprintf(slow, 2)}, ""))
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-cc2", Spec: fmt.Sprintf(slow, 1)}, ""))
	require.Equal(t, "done", h.waitFinal("exp-cc1"))
	require.Equal(t, "done", h.waitFinal("exp-cc2"))

	type span struct {
		run        string
		start, end int64
	}
	var spans []span
	for _, id := range []string{"exp-cc1", "exp-cc2"} {
		runs, err := h.store.Runs(ctx, id)
		require.NoError(t, err)
		for _, r := range runs {
			require.Equal(t, "done", r.State, r.RunID)
			var phases []events.Phase
			require.NoError(t, jsonUnmarshal(r.Phases, &phases))
			require.Equal(t, "provisioning", phases[0].Name)
			spans = append(spans, span{r.RunID, phases[0].StartMs, phases[len(phases)-1].EndMs})
		}
	}
	require.Len(t, spans, 6)
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		require.GreaterOrEqual(t, spans[i].start, spans[i-1].end, "%s started before %s ended", spans[i].run, spans[i-1].run)
	}
}

// TestStaleSlotsAreReclaimed: the cluster's slots are held by a run that
// is final and by one whose key is gone (their releases were lost in a
// crash). With the limit at one, a new experiment must still run.
func TestStaleSlotsAreReclaimed(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	kv, err := h.bus.KV(ctx, scheduler.Bucket)
	require.NoError(t, err)
	old, _ := json.Marshal(scheduler.RunRecord{ExperimentID: "old", RunID: "old-r0000", State: events.RunStateFailed})
	_, err = kv.Put(ctx, "run.old-r0000", old)
	require.NoError(t, err)
	set, _ := json.Marshal(scheduler.SlotSet{Cluster: "local", Runs: []string{"gone-r0000", "old-r0000"}})
	_, err = kv.Put(ctx, "slots.local", set)
	require.NoError(t, err)

	h.submit(ctx, "exp-stale", 1)
	require.Equal(t, "done", h.waitFinal("exp-stale"))
	e, err := kv.Get(ctx, "slots.local")
	require.NoError(t, err)
	var after scheduler.SlotSet
	require.NoError(t, json.Unmarshal(e.Value(), &after))
	require.Empty(t, after.Runs, "stale holders reclaimed, finished runs released")
}

// TestDeadLetteredSubmissionIsListedAsFailed: a submission the consumer
// cannot even decode is dead-lettered; the experiment id in its headers
// still appears in list, failed, with the dead-letter reason.
func TestDeadLetteredSubmissionIsListedAsFailed(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	msg := nats.NewMsg(bus.Subject(events.TypeExperimentSubmit))
	msg.Header.Set(bus.HeaderType, string(events.TypeExperimentSubmit))
	msg.Header.Set(bus.HeaderVersion, "1")
	msg.Header.Set(bus.HeaderExperiment, "exp-undecodable")
	msg.Data = []byte(`{"experiment_id":"exp-undecodable"}`) // no spec
	_, err := h.bus.JetStream().PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, "failed", h.waitFinal("exp-undecodable"))
	st, ok := h.sched.Status("exp-undecodable")
	require.True(t, ok)
	require.Equal(t, "failed", st.State)
	require.Contains(t, st.Reason, "submission dead-lettered: undecodable")
	require.Contains(t, listed(h.sched), "exp-undecodable")
}

// gatedWatch is the real state bucket whose watch (the scheduler's initial
// load of its view) starts only once gate is closed.
type gatedWatch struct {
	jetstream.KeyValue
	gate chan struct{}
}

func (g gatedWatch) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.KeyValue.WatchAll(ctx, opts...)
}

// TestNotReadyUntilItsStateIsLoaded starts a second scheduler while an
// experiment exists, holding back the load of its view: until the load is
// done it is not ready (service.Checker) and its API answers 503 "not
// ready" — never 404 for an experiment that exists — then 200.
func TestNotReadyUntilItsStateIsLoaded(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h.submit(ctx, "exp-ready", 1)
	require.Equal(t, "done", h.waitFinal("exp-ready"))

	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	b, err := bus.Connect(ctx, h.url, "scheduler-2", zap.NewNop(), nil)
	require.NoError(t, err)
	defer b.Close()
	s, err := scheduler.New(cfg, b, h.store, testenv.Logger(t), prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	gate := make(chan struct{})
	s.WrapKV(func(kv jetstream.KeyValue) jetstream.KeyValue { return gatedWatch{kv, gate} })
	mux := http.NewServeMux()
	s.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	require.ErrorIs(t, s.Check(), scheduler.ErrNotReady, "not ready before Run")
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.ErrorIs(t, s.Check(), scheduler.ErrNotReady)
	code, body := get("/v1/experiments/exp-ready")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "not ready")
	code, _ = get("/v1/experiments")
	require.Equal(t, http.StatusServiceUnavailable, code)

	close(gate)
	testenv.Eventually(t, 10*time.Second, "the second scheduler to load its state", func() bool { return s.Check() == nil })
	code, body = get("/v1/experiments/exp-ready")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"state":"done"`)
	code, _ = get("/v1/experiments/nope")
	require.Equal(t, http.StatusNotFound, code, "unknown, now that the state is loaded")
	stop()
	require.NoError(t, <-done)
	require.Error(t, s.Check(), "not ready once stopped")
}
