package scheduler_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

const capacitySpec = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: capacity}
spec:
  workload: {sensors: 100, format: avro}
  phases: {baseline: 10ms, warmup: 10ms, measure: 50ms, cooldown: 10ms}
  search: {start: 1000, max: 1000000, tolerance: 0.05}
`

var search = spec.Search{Start: 1000, Max: 1_000_000, Tolerance: 0.05}

func TestNextProbe(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		lo, hi    float64
		rate      float64
		sustained bool
		want      scheduler.SearchStep
	}{
		{"sustained: double", 0, 0, 1000, true, scheduler.SearchStep{Lo: 1000, Next: 2000}},
		{"doubling stops at the ceiling", 400_000, 0, 600_000, true, scheduler.SearchStep{Lo: 600_000, Next: 1_000_000}},
		{"sustained at the ceiling: done", 600_000, 0, 1_000_000, true, scheduler.SearchStep{Lo: 1_000_000, Done: true, Capacity: 1_000_000}},
		{"not even the first: halve", 0, 0, 1000, false, scheduler.SearchStep{Hi: 1000, Next: 500}},
		{"below 1 msg/s: none sustained", 0, 0, 1.5, false, scheduler.SearchStep{Hi: 1.5, Done: true, Capacity: 0}},
		{"first failure: bisect down", 4000, 0, 8000, false, scheduler.SearchStep{Lo: 4000, Hi: 8000, Next: 6000}},
		{"between the bounds, sustained: bisect up", 4000, 8000, 6000, true, scheduler.SearchStep{Lo: 6000, Hi: 8000, Next: 7000}},
		{"bounds within tolerance: the lower one", 7000, 7500, 7250, true, scheduler.SearchStep{Lo: 7250, Hi: 7500, Done: true, Capacity: 7250}},
		{"not sustained, within tolerance", 7250, 7500, 7400, false, scheduler.SearchStep{Lo: 7250, Hi: 7400, Done: true, Capacity: 7250}},
		{"just outside tolerance: go on", 1000, 1100, 1000, true, scheduler.SearchStep{Lo: 1000, Hi: 1100, Next: 1050}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, scheduler.NextProbe(search, tc.lo, tc.hi, tc.rate, tc.sustained))
		})
	}
}

// TestNextProbeFindsTheCapacity runs whole searches against systems of
// known capacity, rounding each probe to whole msg/s as the scheduler does:
// the answer is sustained and within the tolerance of the true capacity.
func TestNextProbeFindsTheCapacity(t *testing.T) {
	t.Parallel()
	for _, capacity := range []float64{0.5, 700, 7300, 123_456, 2_000_000} {
		var lo, hi float64
		rate := search.Start
		var probes []float64
		var step scheduler.SearchStep
		for !step.Done {
			require.Less(t, len(probes), 60, "capacity %v: probes %v", capacity, probes)
			probes = append(probes, rate)
			step = scheduler.NextProbe(search, lo, hi, rate, rate <= capacity)
			lo, hi, rate = step.Lo, step.Hi, math.RoundToEven(step.Next)
		}
		want := min(capacity, search.Max)
		require.LessOrEqual(t, step.Capacity, want, "capacity %v: probes %v", capacity, probes)
		if want >= 1 {
			require.GreaterOrEqual(t, step.Capacity, want*(1-search.Tolerance), "capacity %v: probes %v", capacity, probes)
		}
		if capacity == 7300 {
			require.Equal(t, []float64{1000, 2000, 4000, 8000, 6000, 7000, 7500, 7250}, probes)
		}
	}
}

func TestCapacitySearchDoublesThenBisects(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) { h.capacity = 7300 })
	rates, got := runSearch(t, h, "exp-s")
	require.Len(t, rates, 8, "probes: %v", rates)
	require.Equal(t, 7250.0, got["capacity_msg_per_s"], "probes: %v", rates)
	require.Equal(t, 50.0, got["capacity_sut_uj_per_event"])
	require.Equal(t, 8.0, got["search_probes"])
	require.LessOrEqual(t, got["capacity_msg_per_s"], h.capacity)
	require.GreaterOrEqual(t, got["capacity_msg_per_s"], h.capacity*0.95)
}

// runSearch submits capacitySpec as experiment id, waits for it to end
// done, and returns its runs' factors and its experiment-scope results.
func runSearch(t *testing.T, h *harness, id string) (factors []string, got map[string]float64) {
	t.Helper()
	ctx := context.Background()
	h.submitSpec(ctx, id, capacitySpec)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(id))
	runs, err := h.store.Runs(ctx, id)
	require.NoError(t, err)
	for _, r := range runs {
		factors = append(factors, r.Factors)
	}
	return factors, experimentResults(t, h, id)
}

// experimentResults returns an experiment's experiment-scope results.
func experimentResults(t testing.TB, h *harness, id string) map[string]float64 {
	t.Helper()
	res, err := h.store.Results(context.Background(), id)
	require.NoError(t, err)
	got := map[string]float64{}
	for _, r := range res {
		if r.Scope == "experiment" {
			got[r.Metric] = r.Value
		}
	}
	return got
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
	t.Parallel()
	kv := &failingCreate{fail: map[string]bool{"run.exp-fc-r0001": true}}
	h, _ := newHarness(t, nil, func(h *harness) {
		h.capacity = 7300
		h.wrapKV = func(b jetstream.KeyValue) jetstream.KeyValue { kv.KeyValue = b; return kv }
	})
	h.submitSpec(context.Background(), "exp-fc", capacitySpec)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("exp-fc"))
	kv.mu.Lock()
	require.Equal(t, []string{"run.exp-fc-r0001"}, kv.failed, "the fault was injected")
	kv.mu.Unlock()
	runs := h.runsByID("exp-fc")
	require.Len(t, runs, 8, "the same probes as without the fault")
	for id, r := range runs {
		require.Equal(t, events.RunStateDone, r.State, id)
	}
	got := experimentResults(t, h, "exp-fc")
	require.Contains(t, got, "capacity_msg_per_s", "no capacity result")
	require.Equal(t, 7250.0, got["capacity_msg_per_s"])
}
