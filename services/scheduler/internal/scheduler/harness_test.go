package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
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
	// neverStarted: the runs whose final state said they never started.
	neverStarted map[string]bool
	// experiments seen in experiment.state events
	experiments map[string]bool
	// announced is every experiment.state event, by experiment, and
	// order every one as "id state", in the stream's order.
	announced map[string][]events.ExperimentState
	order     []string
	fail      func(runID string) bool
	// failLoad makes the load generator report a failure for chosen runs.
	failLoad func(runID string) bool
	// overLoad makes the load generator report, for chosen runs, a load it
	// could not keep up with (a permanent failure).
	overLoad func(runID string) bool
	// capacity, when set, makes the responder store results of a system
	// that sustains at most this many msg/s.
	capacity float64
	// lagUnresolved, when set with capacity, makes the responder flag the
	// runs it picks lag_verdict_unresolved.
	lagUnresolved func(m *events.RunMeasured) bool
	// Hooks answer a command instead of the default reply when they return
	// messages (nil: the default; an empty slice: no answer at all).
	onTeardown func(m *events.RunTeardown) []events.Message
	onLoad     func(m *events.LoadStart) []events.Message
	onMeasured func(m *events.RunMeasured) []events.Message
	onProvide  func(m *events.RunProvision) []events.Message
	// passive leaves the commands unanswered (benchmarks answer their own).
	passive bool
	// measured keeps every run.measured the analyzer role received.
	measured map[string]events.RunMeasured
	// wrapKV wraps the scheduler's state bucket (fault injection).
	wrapKV func(jetstream.KeyValue) jetstream.KeyValue
	// msgIDs keeps the Nats-Msg-Id of every command received, by type and run.
	msgIDs map[events.Type]map[string][]string
	url    string
	sched  *scheduler.Scheduler
	// stopScheduler stops the first scheduler instance.
	stopScheduler func()
	clock         clock.WithTicker // nil: the real clock
}

// newHarness starts NATS, a store, a scheduler (cfg changes its test
// configuration) and the responders. Everything stops at the test's end;
// cancel stops the scheduler and responders earlier.
func newHarness(t testing.TB, cfg func(*scheduler.Config), opts ...func(*harness)) (*harness, context.CancelFunc) {
	t.Helper()
	h := &harness{t: t, url: testenv.NATS(t), store: testenv.Store(t), states: map[string][]string{}, seen: map[events.Type][]string{},
		final: map[string]string{}, neverStarted: map[string]bool{}, fail: func(string) bool { return false }, experiments: map[string]bool{},
		announced: map[string][]events.ExperimentState{},
		failLoad:  func(string) bool { return false }, overLoad: func(string) bool { return false }, measured: map[string]events.RunMeasured{},
		msgIDs: map[events.Type]map[string][]string{}}
	for _, o := range opts {
		o(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.bus = testenv.Bus(t, h.url, "test")
	h.stopScheduler = h.startScheduler(ctx, cfg)
	if !h.passive {
		go h.respond(ctx)
	}
	go func() {
		_ = h.bus.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunState, events.TypeExperimentState, events.TypeLoadStop,
			events.TypeRunTeardown, events.TypeCollectRelease}, func(d bus.Delivery) {
			h.mu.Lock()
			defer h.mu.Unlock()
			switch m := d.Msg.(type) {
			case *events.RunState:
				h.states[m.RunID] = append(h.states[m.RunID], m.State)
				if m.NeverStarted {
					h.neverStarted[m.RunID] = true
				}
			case *events.ExperimentState:
				h.experiments[m.ExperimentID] = true
				h.announced[m.ExperimentID] = append(h.announced[m.ExperimentID], *m)
				h.order = append(h.order, m.ExperimentID+" "+m.State)
				if events.ExperimentFinal(m.State) {
					h.final[m.ExperimentID] = m.State
				}
			}
			_, run := d.Msg.IDs()
			h.seen[d.Msg.MessageType()] = append(h.seen[d.Msg.MessageType()], run)
		})
	}()
	return h, cancel
}

// testConfig is the scheduler's configuration in these tests: a fast tick
// and a broker address nothing dials.
func testConfig(mod func(*scheduler.Config)) scheduler.Config {
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	cfg.Tick = 5 * time.Millisecond
	// One retry, at once: what the tests of run outcomes expect; the
	// back-off has tests of its own (backoff_test.go).
	cfg.Retries, cfg.RetryBackoff = 1, 0
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// newScheduler builds a scheduler with its own bus connection on url.
func newScheduler(t testing.TB, url string, cfg scheduler.Config, st scheduler.Store, clk clock.WithTicker) *scheduler.Scheduler {
	t.Helper()
	b := testenv.Bus(t, url, "scheduler")
	s, err := scheduler.New(cfg, scheduler.Deps{Bus: b, Store: st, Logger: testenv.Logger(t), Registry: prometheus.NewRegistry(), Clock: clk})
	require.NoError(t, err)
	return s
}

// runScheduler runs s as a service does — Init, then Run, in a service.Group —
// until ctx ends, and returns what Run returned. The test waits for it
// to stop before its cleanup closes what it uses.
func runScheduler(t testing.TB, ctx context.Context, s *scheduler.Scheduler) <-chan error {
	var g service.Group
	g.Add("scheduler", s)
	done := make(chan error, 1)
	stopped := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() { defer close(stopped); done <- g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return done
}

// startScheduler adds a scheduler instance (mod changes its test
// configuration); h.sched is the last one started. stop stops it and
// waits until it has.
func (h *harness) startScheduler(ctx context.Context, mod func(*scheduler.Config)) (stop func()) {
	s := newScheduler(h.t, h.url, testConfig(mod), h.store, h.clock)
	if h.wrapKV != nil {
		s.WrapKV(h.wrapKV)
	}
	h.sched = s
	ctx, cancel := context.WithCancel(ctx)
	done := runScheduler(h.t, ctx, s)
	// Like a client waiting for /healthz: until its state is loaded the
	// scheduler answers 503.
	testenv.Eventually(h.t, 30*time.Second, "scheduler ready", func() bool { return s.Check() == nil })
	return func() { cancel(); <-done }
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

// respond plays provisioner, load generator and analyzer.
func (h *harness) respond(ctx context.Context) {
	spec := bus.ConsumerSpec{Durable: "responder", Types: []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunTeardown,
		events.TypeRunMeasured}}
	_ = h.bus.Consume(ctx, spec, func(ctx context.Context, d bus.Delivery) error {
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
		return h.defaultReply(ctx, d.Msg)
	})
}

// defaultReply answers a command as a healthy service would.
func (h *harness) defaultReply(ctx context.Context, msg events.Message) error {
	now := time.Now().UnixMilli()
	switch m := msg.(type) {
	case *events.RunProvision:
		if h.fail(m.RunID) {
			return h.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Reason: "image pull failed", TsMs: now}, "")
		}
		return h.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: "local", TsMs: now,
			Targets: []events.Target{{ID: "process/" + m.RunID, Kind: "process", Node: "n1", Role: "sut", PID: 1}}}, "")
	case *events.LoadStart:
		if h.overLoad(m.RunID) {
			return h.bus.Publish(ctx, events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: "lg", StartMs: now, EndMs: now,
				Failed: true, Permanent: true, Reason: "load generators could not keep up with the offered load: 2000000000 msg/s offered, 600000 msg/s produced"}, "")
		}
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
			rows := []store.Result{
				{Scope: "run", Metric: "offered_rate_eps", Value: m.OfferedRate},
				{Scope: "run", Metric: "throughput_eps", Value: min(m.OfferedRate, h.capacity) * 0.99},
				{Scope: "run", Metric: "lag_slo_ok", Value: ok},
				{Scope: "run", Metric: "sut_uj_per_event", Value: 50, Estimated: true},
			}
			if h.lagUnresolved != nil && h.lagUnresolved(m) {
				rows = append(rows, store.Result{Scope: "run", Metric: "flag_lag_verdict_unresolved", Value: 1})
			}
			if err := h.store.ReplaceResults(ctx, m.ExperimentID, m.RunID, rows); err != nil {
				return err
			}
		}
		return h.bus.Publish(ctx, events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: now}, "")
	}
	return nil
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

// submit publishes the test spec with reps repetitions as experiment id.
func (h *harness) submit(ctx context.Context, id string, reps int) {
	h.submitSpec(ctx, id, fmt.Sprintf(specTmpl, reps))
}

// submitSpec publishes a spec as experiment id.
func (h *harness) submitSpec(ctx context.Context, id, spec string) {
	require.NoError(h.t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: spec}, "submit:"+id))
}

// waitFinal waits for the experiment's final state and returns it.
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

// runDone submits the test spec with one repetition as experiment id,
// requires that it ends done, and returns its stored runs by id.
func (h *harness) runDone(id string) map[string]store.Run {
	h.t.Helper()
	h.submit(context.Background(), id, 1)
	require.Equal(h.t, events.ExperimentStateDone, h.waitFinal(id))
	return h.runsByID(id)
}

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

// runStates returns the states a run announced, in order.
func (h *harness) runStates(runID string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.states[runID]...)
}

// experimentIDs returns the announced experiments whose id has prefix.
func (h *harness) experimentIDs(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := slices.Sorted(maps.Keys(h.experiments))
	return slices.DeleteFunc(ids, func(id string) bool { return !strings.HasPrefix(id, prefix) })
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

// phasesOf decodes a stored run's phases.
func phasesOf(t testing.TB, r store.Run) []events.Phase {
	t.Helper()
	var phases []events.Phase
	require.NoError(t, json.Unmarshal([]byte(r.Phases), &phases))
	return phases
}

// postSpec submits body over HTTP and decodes the reply.
func postSpec(t testing.TB, url, query string, body []byte) (int, scheduler.SubmitReply) {
	t.Helper()
	var rep scheduler.SubmitReply
	code := call(t, http.MethodPost, url+"/v1/experiments"+query, "", string(body), &rep)
	return code, rep
}

// submitAccepted submits body over HTTP and requires it accepted (202).
func submitAccepted(t testing.TB, url, query string, body []byte) scheduler.SubmitReply {
	t.Helper()
	code, rep := postSpec(t, url, query, body)
	require.Equal(t, http.StatusAccepted, code, rep.Error)
	return rep
}

// runError waits for the error of a scheduler's Run, which must come
// while its context is live.
func runError(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not fail within 15s while its context was live")
		return nil
	}
}
