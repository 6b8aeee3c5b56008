package scheduler_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// longSpec is the test spec with runs that measure for an hour: they stay
// active until cancelled.
func longSpec(reps int) string {
	return strings.Replace(fmt.Sprintf(specTmpl, reps), "measure: 150ms", "measure: 1h", 1)
}

// sweepRuns is the size of the sweep that keeps the scheduler busy, as in
// the report: creating or cancelling it takes the submission consumer
// seconds, during which it handles nothing else.
const sweepRuns = 20000

// The id a 202 hands out is an experiment at once: while the scheduler is
// busy creating, then cancelling, a 20,000-run sweep, a small experiment
// submitted behind it answers GET (submitted) and takes a cancel, and ends cancelled without any of its runs starting.
// Before, GET and cancel answered 404 until the consumer reached it (~3.5
// s, and ~14 s behind a cancel), and the cancel was lost.
func TestAcceptedExperimentAnswersAndCancelsWhileSchedulerIsBusy(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	sweep := strings.Replace(longSpec(1), `values: ["10", "20"]`, fmt.Sprintf("range: {from: 1, to: %d, step: 1}", sweepRuns), 1)

	accepted := time.Now()
	big := submitAccepted(t, url, "?yes=true", []byte(sweep))
	require.Equal(t, sweepRuns, big.Runs)

	// getCancel GETs an experiment and cancels it at once, over HTTP.
	getCancel := func(id string) scheduler.ExperimentStatus {
		t.Helper()
		var st scheduler.ExperimentStatus
		require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+id, &st), "GET right after the 202")
		require.Equal(t, http.StatusAccepted, cancel(t, url, id), "cancel right after the 202")
		return st
	}

	// 1. Behind the sweep being created, over HTTP.
	small := submitAccepted(t, url, "", []byte(longSpec(1)))
	st := getCancel(small.ID)
	require.Equal(t, events.ExperimentStateSubmitted, st.State, "the consumer is still creating the sweep")
	require.Equal(t, 2, st.RunsTotal, "a submitted experiment shows the runs it will have")

	// 2. Another, GET and cancel at once.
	second := submitAccepted(t, url, "", []byte(longSpec(1)))
	require.Equal(t, second.ID, getCancel(second.ID).ID)

	// 3. Behind the sweep being cancelled: wait until the sweep is created,
	// cancel it, and submit, GET and cancel one more at once.
	testenv.Eventually(t, 3*time.Minute, "the sweep created", func() bool {
		st, ok := h.sched.Status(big.ID)
		return ok && st.State != events.ExperimentStateSubmitted
	})
	t.Logf("the %d-run sweep took %s from its 202 to its runs created (the window in which GET used to answer 404)",
		sweepRuns, time.Since(accepted).Round(time.Millisecond))
	cancelled := time.Now()
	require.Equal(t, http.StatusAccepted, cancel(t, url, big.ID))
	third := submitAccepted(t, url, "", []byte(longSpec(1)))
	getCancel(third.ID)

	// Each ends cancelled; none of the small ones' runs ever started.
	for _, id := range []string{small.ID, second.ID, third.ID, big.ID} {
		testenv.Eventually(t, 3*time.Minute, "experiment "+id+" cancelled", func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.final[id] != ""
		})
		require.Equal(t, events.ExperimentStateCancelled, h.final[id], id)
		if id == third.ID {
			t.Logf("the experiment submitted behind the sweep's cancel ended cancelled %s after that cancel",
				time.Since(cancelled).Round(time.Millisecond))
		}
	}
	for _, id := range []string{small.ID, second.ID, third.ID} {
		var st scheduler.ExperimentStatus
		require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+id, &st))
		require.Equal(t, events.ExperimentStateCancelled, st.State)
		for _, r := range st.Runs {
			require.NotContains(t, h.runStates(r.RunID), events.RunStateProvisioning, "run %s of cancelled %s started", r.RunID, id)
		}
	}

	// The cancelled sweep counts its runs as cancelled, not failed.
	var list []scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments", &list))
	i := slices.IndexFunc(list, func(e scheduler.ExperimentStatus) bool { return e.ID == big.ID })
	require.GreaterOrEqual(t, i, 0)
	require.Equal(t, sweepRuns, list[i].RunsTotal)
	require.Equal(t, sweepRuns, list[i].RunsCancelled)
	require.Zero(t, list[i].RunsFail)
}

// An experiment submitted and cancelled over HTTP while its first run
// measures ends cancelled, and its cancelled runs are counted apart from
// failed ones — in the HTTP status, the list (what `greenflow status` and
// `list` show).
func TestHTTPCancelledRunsAreNotCountedAsFailed(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	rep := submitAccepted(t, url, "", []byte(longSpec(1)))
	testenv.Eventually(t, 30*time.Second, "the first run measuring", func() bool {
		var st scheduler.ExperimentStatus
		return getJSON(t, url+"/v1/experiments/"+rep.ID, &st) == http.StatusOK && len(st.Runs) == 2 && st.Runs[0].State == events.RunStateMeasuring
	})
	require.Equal(t, http.StatusAccepted, cancel(t, url, rep.ID))
	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(rep.ID))

	var st scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+rep.ID, &st))
	require.Equal(t, 2, st.RunsTotal)
	require.Equal(t, 2, st.RunsCancelled)
	require.Zero(t, st.RunsFail)
	require.Zero(t, st.RunsDone)
	for _, r := range st.Runs {
		require.Equal(t, events.RunStateCancelled, r.State)
	}
}

// gatedRunCreate is the real state bucket whose creation of run keys waits
// until gate is closed; entered is closed when the first one is tried.
type gatedRunCreate struct {
	jetstream.KeyValue
	gate, entered chan struct{}
	once          *sync.Once
	// free is how many run keys are created before the gate holds the rest.
	free *atomic.Int32
}

func (g gatedRunCreate) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if strings.HasPrefix(key, "run.") && g.free.Add(-1) < 0 {
		g.once.Do(func() { close(g.entered) })
		select {
		case <-g.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.KeyValue.Create(ctx, key, value, opts...)
}

// gatedHarness is a scheduler whose state bucket is a gatedRunCreate (the
// one returned), with its HTTP API's URL.
func gatedHarness(t *testing.T) (*harness, *gatedRunCreate, string) {
	g := &gatedRunCreate{gate: make(chan struct{}), entered: make(chan struct{}), once: &sync.Once{}, free: &atomic.Int32{}}
	h, _ := newHarness(t, nil, func(h *harness) {
		h.wrapKV = func(kv jetstream.KeyValue) jetstream.KeyValue { g.KeyValue = kv; return *g }
	})
	return h, g, apiServer(t, h)
}

// A cancel that comes while the consumer is creating the experiment's runs
// is kept: the runs it created are cancelled, none starts, and the
// experiment ends cancelled with its runs counted as cancelled.
func TestCancelWhileRunsAreCreatedCancelsThem(t *testing.T) {
	t.Parallel()
	h, g, url := gatedHarness(t)
	rep := submitAccepted(t, url, "", []byte(longSpec(2)))
	select {
	case <-g.entered: // the consumer is creating the runs
	case <-time.After(30 * time.Second):
		t.Fatal("the consumer never started creating the runs")
	}
	var st scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+rep.ID, &st))
	require.Equal(t, events.ExperimentStateSubmitted, st.State)
	require.Equal(t, 4, st.RunsTotal)
	require.Equal(t, http.StatusAccepted, cancel(t, url, rep.ID))
	close(g.gate)

	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(rep.ID))
	testenv.Eventually(t, 30*time.Second, "every run cancelled", func() bool {
		getJSON(t, url+"/v1/experiments/"+rep.ID, &st)
		return st.RunsCancelled == 4
	})
	require.Len(t, st.Runs, 4)
	require.Zero(t, st.RunsFail)
	for _, r := range st.Runs {
		require.Equal(t, events.RunStateCancelled, r.State)
		require.NotContains(t, h.runStates(r.RunID), events.RunStateProvisioning)
	}
	stored, err := h.store.Runs(context.Background(), rep.ID)
	require.NoError(t, err)
	require.Len(t, stored, 4)
	for _, r := range stored {
		require.Equal(t, events.RunStateCancelled, r.State, r.RunID)
	}
}

// An experiment accepted with 202 whose submission the scheduler never
// took — each scheduler process taking it went away while handling it
// (the first mid-handler, before it queued the spec for the expander, the
// others before starting it), until its deliveries were spent — is
// dead-lettered by the next scheduler and its status says failed, with the
// reason. Before, the server stopped delivering the submission and the
// experiment stayed submitted forever.
func TestSubmissionWhoseDeliveriesRanOutFailsTheExperiment(t *testing.T) {
	t.Parallel()
	armed := &atomic.Bool{}
	armed.Store(true)
	g := &gatedUpdate{prefix: "exp.", armed: armed, gate: make(chan struct{}), entered: make(chan struct{}), once: &sync.Once{}}
	h, _ := newHarness(t, nil, func(h *harness) {
		h.wrapKV = func(kv jetstream.KeyValue) jetstream.KeyValue { g.KeyValue = kv; return *g }
	})
	url := apiServer(t, h)
	code, rep := postSpec(t, url, "", []byte(longSpec(1)))
	require.Equal(t, http.StatusAccepted, code, rep.Error)
	testenv.Receive(t, g.entered, 30*time.Second, "the consumer queuing the spec")
	var st scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+rep.ID, &st))
	require.Equal(t, events.ExperimentStateSubmitted, st.State)
	submitted := st

	h.stopScheduler() // mid-handler: the submission's first delivery spent
	ctx := t.Context()
	spendDeliveries(t, h, "the submission", func(m jetstream.Msg) bool { return m.Headers().Get(bus.HeaderExperiment) == rep.ID })
	armed.Store(false)
	close(g.gate)
	h.startScheduler(ctx, nil)
	require.Equal(t, events.ExperimentStateFailed, h.waitFinal(rep.ID))
	st, ok := h.sched.Status(rep.ID)
	require.True(t, ok)
	require.Equal(t, events.ExperimentStateFailed, st.State)
	require.Contains(t, st.Reason, "submission dead-lettered: out of deliveries")
	require.Contains(t, listed(h.sched), rep.ID)
	// Its ClickHouse row says what was submitted and when (it had an
	// empty name and spec, and the failure's time).
	row, err := h.store.GetExperiment(ctx, rep.ID)
	require.NoError(t, err)
	require.Equal(t, events.ExperimentStateFailed, row.State)
	require.Equal(t, submitted.Name, row.Name)
	require.NotEmpty(t, row.Name)
	require.Contains(t, row.Spec, "measure: 1h", "the submitted spec")
	require.Equal(t, submitted.CreatedMs, row.CreatedMs, "the submission's time")
}

// spendDeliveries spends the deliveries left to the message match picks
// (its first was spent by the scheduler stopped holding it) as schedulers
// going away before they handle it would: fetched from the scheduler's
// consumer and Nak'ed, with whatever else comes.
func spendDeliveries(t *testing.T, h *harness, what string, match func(jetstream.Msg) bool) {
	t.Helper()
	cons, err := h.bus.JetStream().Consumer(t.Context(), bus.StreamLifecycle, bus.ConsumerScheduler.Durable)
	require.NoError(t, err)
	spent := 1
	testenv.Eventually(t, 30*time.Second, what+"'s other deliveries spent by schedulers going away", func() bool {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			if match(m) {
				spent++
			}
			require.NoError(t, m.Nak())
		}
		return spent >= bus.DefaultMaxDeliver
	})
}

// gatedUpdate is the real state bucket whose updates of keys starting
// with prefix wait on gate once armed: a cancel's handler is caught before
// it marked the experiment.
type gatedUpdate struct {
	jetstream.KeyValue
	prefix        string
	armed         *atomic.Bool
	gate, entered chan struct{}
	once          *sync.Once
}

func (g gatedUpdate) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	if g.armed.Load() && strings.HasPrefix(key, g.prefix) {
		g.once.Do(func() { close(g.entered) })
		select {
		case <-g.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.KeyValue.Update(ctx, key, value, last)
}

// A cancel accepted with 202 whose handler died with its process, again
// and again, until its deliveries were spent — before it had marked the
// experiment — is carried out by the dead-letter hook of the next
// scheduler: no run is left pending or running, and the cancellation is
// announced. Before, the cancel vanished with its deliveries.
func TestCancelWhoseDeliveriesRanOutIsCarriedOut(t *testing.T) {
	t.Parallel()
	g := &gatedUpdate{prefix: "exp.", armed: &atomic.Bool{}, gate: make(chan struct{}), entered: make(chan struct{}), once: &sync.Once{}}
	h, _ := newHarness(t, nil, func(h *harness) {
		h.wrapKV = func(kv jetstream.KeyValue) jetstream.KeyValue { g.KeyValue = kv; return *g }
	})
	url := apiServer(t, h)
	rep := submitAccepted(t, url, "", []byte(longSpec(2)))
	testenv.Eventually(t, 30*time.Second, "the first run measuring", func() bool {
		return last(h.runStates(rep.ID+"-r0000")) == events.RunStateMeasuring
	})
	g.armed.Store(true) // the next experiment update waits: the cancel's
	require.Equal(t, http.StatusAccepted, cancel(t, url, rep.ID))
	testenv.Receive(t, g.entered, 30*time.Second, "the cancel's handler marking the experiment")

	h.stopScheduler() // mid-handler: the cancel's first delivery spent
	ctx := t.Context()
	spendDeliveries(t, h, "the cancel", func(m jetstream.Msg) bool {
		return events.Type(m.Headers().Get(bus.HeaderType)) == events.TypeExperimentCancel
	})
	g.armed.Store(false)
	close(g.gate)
	h.startScheduler(ctx, nil)
	require.Equal(t, events.ExperimentStateCancelled, h.waitFinal(rep.ID), "the cancellation announced")
	testenv.Eventually(t, 30*time.Second, "every run cancelled", func() bool {
		st, ok := h.sched.Status(rep.ID)
		if !ok || len(st.Runs) == 0 {
			return false
		}
		for _, r := range st.Runs {
			if r.State != events.RunStateCancelled {
				return false
			}
		}
		return true
	})
	st, _ := h.sched.Status(rep.ID)
	require.Contains(t, st.Runs[len(st.Runs)-1].Reason, "cancel dead-lettered (out of deliveries", "a pending run, cancelled by the hook")
}

// While a large sweep is being expanded into its runs, the consumer keeps
// handling other experiments' events: an experiment measuring when the
// sweep is submitted finishes (its load, teardown and analysis answered)
// before the sweep is accepted. Before, the consumer expanded the sweep
// itself, and every other experiment's events waited behind it (a minute
// for 100,000 runs: a run in its cool-down then failed for want of its
// load.finished).
func TestALargeExpansionHoldsUpNoOtherExperiment(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	one := strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, `values: ["10"]`, 1)
	small := submitAccepted(t, url, "", []byte(strings.Replace(one, "measure: 150ms", "measure: 1s", 1)))
	testenv.Eventually(t, 30*time.Second, "the small experiment measuring", func() bool {
		return last(h.runStates(small.ID+"-r0000")) == events.RunStateMeasuring
	})
	sweep := strings.Replace(longSpec(1), `values: ["10", "20"]`, fmt.Sprintf("range: {from: 1, to: %d, step: 1}", sweepRuns), 1)
	big := submitAccepted(t, url, "?yes=true", []byte(sweep))
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(small.ID))
	testenv.Eventually(t, 2*time.Minute, "the sweep accepted", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Contains(h.order, big.ID+" "+events.ExperimentStateQueued)
	})
	h.mu.Lock()
	order := slices.Clone(h.order)
	h.mu.Unlock()
	require.Less(t, slices.Index(order, small.ID+" "+events.ExperimentStateDone), slices.Index(order, big.ID+" "+events.ExperimentStateQueued),
		"the small experiment ended before the sweep was accepted: %v", order)
}

// A scheduler killed while expanding a queued experiment (its submission
// acked long before) leaves the pending record with its spec: the next
// scheduler expands it, and it runs to the end.
func TestAnExpansionCutShortIsTakenUpByTheNextScheduler(t *testing.T) {
	t.Parallel()
	h, g, url := gatedHarness(t)
	rep := submitAccepted(t, url, "", []byte(fmt.Sprintf(specTmpl, 1)))
	testenv.Receive(t, g.entered, 30*time.Second, "the expander creating the runs")
	h.stopScheduler() // mid-expansion
	close(g.gate)
	h.startScheduler(t.Context(), nil)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(rep.ID))
	runs := h.runsByID(rep.ID)
	require.Len(t, runs, 2)
	for id, r := range runs {
		require.Equal(t, events.RunStateDone, r.State, id)
	}
}

// An expansion cut short after some of its runs were created, and taken up
// by the next scheduler, keeps those runs — so the next one must draw the
// same plan: every run's configuration is the one the experiment's
// recorded seed gives it, as a user reproducing the order from the seed
// would find. Before, each expansion drew its order from its own clock
// (the seed when the spec gives none): the first ten runs followed one
// order, the other ten another, and the recorded seed the second.
func TestAnExpansionTakenUpHalfWayDrawsTheSamePlan(t *testing.T) {
	t.Parallel()
	h, g, url := gatedHarness(t)
	g.free.Store(10)
	text := longSpec(10) // 2 configurations × 10 repetitions, interleaved at random
	rep := submitAccepted(t, url, "", []byte(text))
	testenv.Receive(t, g.entered, 30*time.Second, "the expander past its first ten runs")
	h.stopScheduler()
	close(g.gate)
	time.Sleep(5 * time.Millisecond) // a later clock: the next expansion's own time differs
	h.startScheduler(t.Context(), nil)
	// Read from ClickHouse: the API server is the stopped scheduler's.
	var exp store.Experiment
	testenv.Eventually(t, 30*time.Second, "the experiment accepted by the next scheduler", func() bool {
		var err error
		exp, err = h.store.GetExperiment(context.Background(), rep.ID)
		return err == nil && exp.RunsTotal == 20
	})
	parsed, err := spec.Parse([]byte(text), nil)
	require.NoError(t, err)
	plan, err := parsed.Expand(rep.ID, exp.Seed)
	require.NoError(t, err)
	runs := h.runsByID(rep.ID)
	require.Len(t, runs, 20)
	for _, want := range plan.Runs {
		require.Equal(t, want.ConfigHash, runs[want.ID].ConfigHash, "run %s is the plan's (seed %d)", want.ID, exp.Seed)
	}
}
