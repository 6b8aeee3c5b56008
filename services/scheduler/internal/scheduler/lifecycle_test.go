package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// The scheduler as a component: readiness, failures of its parts, and
// several instances sharing one state bucket.

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
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h.submit(ctx, "exp-ready", 1)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-ready"))

	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	s := newScheduler(t, h.url, cfg, h.store, nil)
	gate := make(chan struct{})
	s.WrapKV(func(kv jetstream.KeyValue) jetstream.KeyValue { return gatedWatch{kv, gate} })
	mux := http.NewServeMux()
	s.RegisterHTTP(mux)
	srvURL := serveWithToken(t, mux, mintToken(t, h.bus, "lifecycle-test", auth.Viewer))
	get := func(path string) (int, string) {
		resp, err := apiClient.Get(srvURL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	require.ErrorIs(t, s.Check(), scheduler.ErrNotReady, "not ready before Run")
	done := runScheduler(t, ctx, s)
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

// TestConsumerThatCannotStartFailsTheScheduler: the scheduler's own durable
// consumer exists with a configuration that cannot be changed; Run must
// return the cause at once, not wait for its context to end.
func TestConsumerThatCannotStartFailsTheScheduler(t *testing.T) {
	t.Parallel()
	url := testenv.NATS(t)
	testenv.BlockConsumer(t, jetStream(t, url), bus.StreamLifecycle, bus.ConsumerScheduler.Durable, bus.Subject(events.TypeRunAnalyzed))
	s := newScheduler(t, url, testConfig(nil), testenv.Store(t), nil)
	require.ErrorContains(t, runError(t, runScheduler(t, context.Background(), s)), "declare consumer "+bus.ConsumerScheduler.Durable)
}

// TestTriggerConsumerThatCannotStartFailsTheScheduler: arming a subject
// trigger starts the trigger consumer; when it cannot start (here its
// durable exists with a deliver policy that cannot be changed) the
// scheduler's Run must fail with the cause instead of running on with
// triggers that would never fire.
func TestTriggerConsumerThatCannotStartFailsTheScheduler(t *testing.T) {
	t.Parallel()
	url := testenv.NATS(t)
	js := jetStream(t, url)
	ctx := context.Background()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: scheduler.StreamTriggers, Subjects: []string{"ci.images.built"}})
	require.NoError(t, err)
	testenv.BlockConsumer(t, js, scheduler.StreamTriggers, "scheduler-triggers", "")
	s := newScheduler(t, url, testConfig(nil), testenv.Store(t), nil)
	done := runScheduler(t, ctx, s)
	testenv.Eventually(t, 10*time.Second, "the scheduler to be ready", func() bool { return s.Check() == nil })
	rep := s.Submit(ctx, scheduler.SubmitRequest{Spec: triggerSpec})
	require.Empty(t, rep.Error)
	require.ErrorContains(t, runError(t, done), "trigger consumer: declare consumer scheduler-triggers")
}

// jetStream is a plain JetStream client of url, for setting the scene.
func jetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	b := testenv.Bus(t, url, "test")
	return b.JetStream()
}

// TestConcurrencyLimitHoldsAcrossSchedulers runs two scheduler instances on
// one NATS with the default limit of one active run. They share the
// submissions and events, and both start pending runs; the runs' recorded
// phases must never overlap. A second experiment on the same cluster,
// submitted meanwhile, shares the limit too.
func TestConcurrencyLimitHoldsAcrossSchedulers(t *testing.T) {
	t.Parallel()
	slow := strings.Replace(specTmpl, "measure: 150ms", "measure: 400ms", 1)
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	h.startScheduler(ctx, nil) // the second instance
	h.submitSpec(ctx, "exp-cc1", fmt.Sprintf(slow, 2))
	h.submitSpec(ctx, "exp-cc2", fmt.Sprintf(slow, 1))
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-cc1"))
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-cc2"))

	type span struct {
		run        string
		start, end int64
	}
	var spans []span
	for _, id := range []string{"exp-cc1", "exp-cc2"} {
		for _, r := range h.runsByID(id) {
			require.Equal(t, events.RunStateDone, r.State, r.RunID)
			phases := phasesOf(t, r)
			require.Equal(t, events.RunStateProvisioning, phases[0].Name)
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
	t.Parallel()
	h, _ := newHarness(t, nil)
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
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-stale"))
	e, err := kv.Get(ctx, "slots.local")
	require.NoError(t, err)
	var after scheduler.SlotSet
	require.NoError(t, json.Unmarshal(e.Value(), &after))
	require.Empty(t, after.Runs, "stale holders reclaimed, finished runs released")
}
