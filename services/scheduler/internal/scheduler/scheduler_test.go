package scheduler_test

import (
	"context"
	"fmt"
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

func TestMain(m *testing.M) { testenv.Main(m) }

const specTmpl = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: sched-test}
spec:
  workload: {sensors: 10, periodMs: 1000, format: avro}
  factors:
    - name: workload.sensors
      values: ["10", "20"]
  repetitions: %d
  phases: {baseline: 50ms, warmup: 50ms, measure: 150ms, cooldown: 50ms}
`

// harness runs a scheduler on real JetStream and ClickHouse. The other
// services are played by responders that answer each command at once (the
// real ones are exercised by the end-to-end tests); fail makes chosen runs'
// provisioning fail.
type harness struct {
	t      testing.TB
	bus    *bus.Bus
	store  *store.Store
	mu     sync.Mutex
	states map[string][]string // run → states in order
	seen   map[events.Type][]string
	final  map[string]string
	// experiments seen in experiment.state events
	experiments map[string]bool
	fail        func(runID string) bool
	// failLoad makes the load generator report a failure for chosen runs.
	failLoad func(runID string) bool
	// capacity, when set, makes the responder store results of a system
	// that sustains at most this many msg/s.
	capacity float64
	// Hooks answer a command instead of the default reply when they return
	// messages (nil: the default; an empty slice: no answer at all).
	onTeardown func(m *events.RunTeardown) []events.Message
	onLoad     func(m *events.LoadStart) []events.Message
	onMeasured func(m *events.RunMeasured) []events.Message
	onProvide  func(m *events.RunProvision) []events.Message
	// measured keeps every run.measured the analyzer role received.
	measured map[string]events.RunMeasured
	// wrapKV wraps the scheduler's state bucket (fault injection).
	wrapKV func(jetstream.KeyValue) jetstream.KeyValue
	// msgIDs keeps the Nats-Msg-Id of every command received, by type and run.
	msgIDs map[events.Type]map[string][]string
	url    string
	sched  *scheduler.Scheduler
	clock  scheduler.Clock
}

// answer publishes a hook's messages; false means the hook left the
// command to the default reply.
func (h *harness) answer(ctx context.Context, msgs []events.Message) (bool, error) {
	if msgs == nil {
		return false, nil
	}
	for _, m := range msgs {
		if err := h.bus.Publish(ctx, m, ""); err != nil {
			return true, err
		}
	}
	return true, nil
}

func newHarness(t *testing.T, cfg func(*scheduler.Config), opts ...func(*harness)) (*harness, context.CancelFunc) {
	t.Helper()
	h := &harness{t: t, url: testenv.NATS(t), store: testenv.Store(t), states: map[string][]string{}, seen: map[events.Type][]string{},
		final: map[string]string{}, fail: func(string) bool { return false }, experiments: map[string]bool{},
		failLoad: func(string) bool { return false }, measured: map[string]events.RunMeasured{},
		msgIDs: map[events.Type]map[string][]string{}}
	for _, o := range opts {
		o(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	h.bus, err = bus.Connect(ctx, h.url, "test", zap.NewNop(), nil)
	require.NoError(t, err)
	t.Cleanup(h.bus.Close)
	h.startScheduler(ctx, cfg)
	go h.respond(ctx)
	go func() {
		_ = h.bus.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunState, events.TypeExperimentState, events.TypeLoadStop,
			events.TypeRunTeardown, events.TypeCollectRelease}, func(d bus.Delivery) {
			h.mu.Lock()
			defer h.mu.Unlock()
			switch m := d.Msg.(type) {
			case *events.RunState:
				h.states[m.RunID] = append(h.states[m.RunID], m.State)
			case *events.ExperimentState:
				h.experiments[m.ExperimentID] = true
				if m.State == "done" || m.State == "failed" || m.State == "cancelled" {
					h.final[m.ExperimentID] = m.State
				}
			}
			_, run := d.Msg.IDs()
			h.seen[d.Msg.MessageType()] = append(h.seen[d.Msg.MessageType()], run)
		})
	}()
	return h, cancel
}

func (h *harness) startScheduler(ctx context.Context, mod func(*scheduler.Config)) {
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	cfg.Tick = 5 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	b, err := bus.Connect(ctx, h.url, "scheduler", zap.NewNop(), nil)
	require.NoError(h.t, err)
	h.t.Cleanup(b.Close)
	s, err := scheduler.New(cfg, b, h.store, testenv.Logger(h.t), prometheus.NewRegistry(), h.clock)
	require.NoError(h.t, err)
	if h.wrapKV != nil {
		s.WrapKV(h.wrapKV)
	}
	h.sched = s
	go func() { _ = s.Run(ctx) }()
}

// respond plays provisioner, load generator and analyzer.
func (h *harness) respond(ctx context.Context) {
	spec := bus.ConsumerSpec{Durable: "responder", Types: []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunTeardown,
		events.TypeRunMeasured}}
	_ = h.bus.Consume(ctx, spec, func(ctx context.Context, d bus.Delivery) error {
		now := time.Now().UnixMilli()
		h.mu.Lock()
		_, run := d.Msg.IDs()
		if h.msgIDs[d.Msg.MessageType()] == nil {
			h.msgIDs[d.Msg.MessageType()] = map[string][]string{}
		}
		h.msgIDs[d.Msg.MessageType()][run] = append(h.msgIDs[d.Msg.MessageType()][run], d.Headers.Get(nats.MsgIdHdr))
		h.mu.Unlock()
		var hooked []events.Message
		switch m := d.Msg.(type) {
		case *events.RunProvision:
			if h.onProvide != nil {
				hooked = h.onProvide(m)
			}
		case *events.LoadStart:
			if h.onLoad != nil {
				hooked = h.onLoad(m)
			}
		case *events.RunTeardown:
			if h.onTeardown != nil {
				hooked = h.onTeardown(m)
			}
		case *events.RunMeasured:
			h.mu.Lock()
			h.measured[m.RunID] = *m
			h.mu.Unlock()
			if h.onMeasured != nil {
				hooked = h.onMeasured(m)
			}
		}
		if done, err := h.answer(ctx, hooked); done || err != nil {
			return err
		}
		switch m := d.Msg.(type) {
		case *events.RunProvision:
			if h.fail(m.RunID) {
				return h.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Reason: "image pull failed", TsMs: now}, "")
			}
			return h.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: "local", TsMs: now,
				Targets: []events.Target{{ID: "process/" + m.RunID, Kind: "process", Node: "n1", Role: "sut", PID: 1}}}, "")
		case *events.LoadStart:
			if h.failLoad(m.RunID) {
				return h.bus.Publish(ctx, events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: "lg", StartMs: now, EndMs: now,
					Failed: true, Reason: "3 of 10 records not delivered: broker gone"}, "")
			}
			return h.bus.Publish(ctx, events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: "lg", StartMs: now, EndMs: now,
				RecordsSent: 42}, "")
		case *events.RunTeardown:
			return h.bus.Publish(ctx, events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: now}, "")
		case *events.RunMeasured:
			if m.RecordsSent != 42 || m.MeasureEndMs <= m.MeasureStartMs {
				return bus.Permanent(fmt.Errorf("bad measured event %+v", m))
			}
			if h.capacity > 0 {
				ok := 1.0
				if m.OfferedRate > h.capacity {
					ok = 0
				}
				if err := h.store.ReplaceResults(ctx, m.ExperimentID, m.RunID, []store.Result{
					{Scope: "run", Metric: "offered_rate_eps", Value: m.OfferedRate},
					{Scope: "run", Metric: "throughput_eps", Value: min(m.OfferedRate, h.capacity) * 0.99},
					{Scope: "run", Metric: "lag_slo_ok", Value: ok},
					{Scope: "run", Metric: "sut_uj_per_event", Value: 50, Estimated: true},
				}); err != nil {
					return err
				}
			}
			return h.bus.Publish(ctx, events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: now}, "")
		}
		return nil
	})
}

func (h *harness) submit(ctx context.Context, id string, reps int) {
	require.NoError(h.t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: fmt.Sprintf(specTmpl, reps)}, "submit:"+id))
}

func (h *harness) waitFinal(id string) string {
	h.t.Cleanup(func() {
		if h.t.Failed() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.t.Logf("run states: %v; messages seen: %v", h.states, h.seen)
		}
	})
	var st string
	testenv.Eventually(h.t, 30*time.Second, "experiment "+id+" to end", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		st = h.final[id]
		return st != ""
	})
	return st
}

func TestRunsFollowTheStateMachineOneAtATime(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	h.submit(ctx, "exp-a", 2)
	require.Equal(t, "done", h.waitFinal("exp-a"))

	runs, err := h.store.Runs(ctx, "exp-a")
	require.NoError(t, err)
	require.Len(t, runs, 4)
	want := []string{"provisioning", "baseline", "warmup", "measuring", "cooldown", "teardown", "analyzing", "done"}
	type span struct{ start, end int64 }
	var spans []span
	for _, r := range runs {
		require.Equal(t, "done", r.State)
		h.mu.Lock()
		got := append([]string(nil), h.states[r.RunID]...)
		h.mu.Unlock()
		require.Equal(t, want, got, r.RunID)
		var phases []events.Phase
		require.NoError(t, jsonUnmarshal(r.Phases, &phases))
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
	h, cancel := newHarness(t, nil)
	defer cancel()
	h.fail = func(run string) bool { return strings.HasSuffix(run, "-r0000") }
	ctx := context.Background()
	h.submit(ctx, "exp-f", 1)
	require.Equal(t, "done", h.waitFinal("exp-f"), "one run succeeded")
	runs, err := h.store.Runs(ctx, "exp-f")
	require.NoError(t, err)
	require.Equal(t, "failed", runs[0].State)
	require.Contains(t, runs[0].Reason, "image pull failed")
	require.Equal(t, "done", runs[1].State)
}

func TestCancelStopsLoadTearsDownAndCancelsPending(t *testing.T) {
	h, cancel := newHarness(t, func(c *scheduler.Config) {})
	defer cancel()
	ctx := context.Background()
	// A long measuring phase so the cancel lands mid-run.
	spec := strings.Replace(fmt.Sprintf(specTmpl, 1), "measure: 150ms", "measure: 1h", 1)
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-c", Spec: spec}, ""))
	testenv.Eventually(t, 20*time.Second, "first run measuring", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		st := h.states["exp-c-r0000"]
		return len(st) > 0 && st[len(st)-1] == "measuring"
	})
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: "exp-c", Reason: "operator"}, ""))
	require.Equal(t, "cancelled", h.waitFinal("exp-c"))
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Contains(t, h.seen[events.TypeLoadStop], "exp-c-r0000")
	require.Contains(t, h.seen[events.TypeRunTeardown], "exp-c-r0000")
	require.NotContains(t, h.seen[events.TypeRunTeardown], "exp-c-r0001", "a pending run has nothing to tear down")
	require.Equal(t, "cancelled", last(h.states["exp-c-r0000"]))
	require.Equal(t, "cancelled", last(h.states["exp-c-r0001"]))
}

func TestInvalidSpecIsRejectedAndNothingQueued(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-bad", Spec: "kind: Experiment\n"}, ""))
	require.Equal(t, "failed", h.waitFinal("exp-bad"))
	runs, err := h.store.Runs(ctx, "exp-bad")
	require.NoError(t, err)
	require.Empty(t, runs)
	// The id the submitter got is listed, failed, with the reason.
	st, ok := h.sched.Status("exp-bad")
	require.True(t, ok)
	require.Equal(t, "failed", st.State)
	require.Contains(t, st.Reason, "invalid spec: ")
	require.Contains(t, listed(h.sched), "exp-bad")
	stored, err := h.store.GetExperiment(ctx, "exp-bad")
	require.NoError(t, err)
	require.Equal(t, "failed", stored.State)
}

// listed returns the ids in the scheduler's list.
func listed(s *scheduler.Scheduler) []string {
	var ids []string
	for _, e := range s.List() {
		ids = append(ids, e.ID)
	}
	return ids
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func TestTransientFailureIsRetriedOnceAsANewRun(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	// The first run's load fails every time; the second's never.
	h.failLoad = func(run string) bool { return strings.HasPrefix(run, "exp-r-r0000") }
	ctx := context.Background()
	h.submit(ctx, "exp-r", 1)
	require.Equal(t, "done", h.waitFinal("exp-r"))
	runs, err := h.store.Runs(ctx, "exp-r")
	require.NoError(t, err)
	byID := map[string]store.Run{}
	for _, r := range runs {
		byID[r.RunID] = r
	}
	require.Len(t, runs, 3, "two runs and one retry; a retry is not retried again (retries=1)")
	require.Equal(t, "failed", byID["exp-r-r0000"].State)
	require.Contains(t, byID["exp-r-r0000"].Reason, "load generator failed: 3 of 10 records not delivered")
	require.Contains(t, byID["exp-r-r0000"].Reason, "retried as exp-r-r0000-a1")
	require.Equal(t, "failed", byID["exp-r-r0000-a1"].State)
	require.Equal(t, byID["exp-r-r0000"].ConfigHash, byID["exp-r-r0000-a1"].ConfigHash)
	require.Equal(t, "done", byID["exp-r-r0001"].State)
}

func TestCapacitySearchDoublesThenBisects(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	h.capacity = 7300
	ctx := context.Background()
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "exp-s", Spec: capacitySpec}, ""))
	require.Equal(t, "done", h.waitFinal("exp-s"))
	runs, err := h.store.Runs(ctx, "exp-s")
	require.NoError(t, err)
	var rates []string
	for _, r := range runs {
		rates = append(rates, r.Factors)
	}
	require.Len(t, runs, 8, "probes: %v", rates)
	res, err := h.store.Results(ctx, "exp-s")
	require.NoError(t, err)
	got := map[string]float64{}
	for _, r := range res {
		if r.Scope == "experiment" {
			got[r.Metric] = r.Value
		}
	}
	require.Equal(t, 7250.0, got["capacity_msg_per_s"], "probes: %v", rates)
	require.Equal(t, 50.0, got["capacity_sut_uj_per_event"])
	require.Equal(t, 8.0, got["search_probes"])
	require.LessOrEqual(t, got["capacity_msg_per_s"], h.capacity)
	require.GreaterOrEqual(t, got["capacity_msg_per_s"], h.capacity*0.95)
}

const capacitySpec = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: capacity}
spec:
  workload: {sensors: 100, format: avro}
  phases: {baseline: 10ms, warmup: 10ms, measure: 50ms, cooldown: 10ms}
  search: {start: 1000, max: 1000000, tolerance: 0.05}
`
