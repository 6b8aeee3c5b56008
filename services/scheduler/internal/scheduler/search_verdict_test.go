package scheduler_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// TestJudgeRun: throughput below the ratio alone fails a run whatever its
// lag said; a delivered load with an unresolved lag verdict is Unresolved,
// not a failure; the lag verdict decides the rest.
func TestJudgeRun(t *testing.T) {
	t.Parallel()
	done := scheduler.RunRecord{State: events.RunStateDone}
	unresolved := results.FlagMetric(results.FlagLagVerdictUnresolved)
	for _, tc := range []struct {
		name    string
		run     scheduler.RunRecord
		metrics map[string]float64
		want    scheduler.Outcome
		reason  string
	}{
		{"delivered, lag resolved below", done, map[string]float64{results.OfferedRateEPS: 1000, results.ThroughputEPS: 990,
			results.LagSLOOK: 1}, scheduler.Sustained, ""},
		{"delivered, lag resolved above", done, map[string]float64{results.OfferedRateEPS: 1000, results.ThroughputEPS: 990,
			results.LagSLOOK: 0, results.LagTrendSlope: 5000}, scheduler.NotSustained, "lag trend 5000 msg/s over the SLO"},
		{"delivered, lag unresolved", done, map[string]float64{results.OfferedRateEPS: 1000, results.ThroughputEPS: 990,
			results.LagSLOOK: 1, results.LagTrendSlope: 300, results.LagTrendSlopeCILow: -1500, results.LagTrendSlopeCIHigh: 2500,
			results.LagSLOThreshold: 2000, unresolved: 1}, scheduler.Unresolved,
			"lag trend 300 msg/s unresolved: its interval [-1500, 2500] contains the SLO's 2000 msg/s"},
		{"unbounded interval", done, map[string]float64{results.OfferedRateEPS: 1000, results.ThroughputEPS: 990,
			results.LagSLOOK: 1, results.LagTrendSlope: 0, results.LagSLOThreshold: 2000, unresolved: 1}, scheduler.Unresolved,
			"lag trend 0 msg/s unresolved: its interval [−∞, ∞] contains the SLO's 2000 msg/s"},
		{"throughput short is decisive", done, map[string]float64{results.OfferedRateEPS: 1000, results.ThroughputEPS: 900,
			results.LagSLOOK: 1, unresolved: 1}, scheduler.NotSustained, "throughput 900/s < 95% of offered 1000/s"},
		{"failed run", scheduler.RunRecord{State: events.RunStateFailed}, nil, scheduler.NotSustained, "run failed"},
		{"invalid measurement", scheduler.RunRecord{State: events.RunStateFailed, Reason: "invalid measurement: offered load not delivered"}, nil,
			scheduler.NotSustained, "run failed: invalid measurement: offered load not delivered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := scheduler.JudgeRun(tc.run, tc.metrics, 0.95)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.reason, reason)
		})
	}
}

func TestDecideProbe(t *testing.T) {
	t.Parallel()
	S, N, U := scheduler.Sustained, scheduler.NotSustained, scheduler.Unresolved
	for _, tc := range []struct {
		name     string
		outcomes []scheduler.Outcome
		repeat   bool
		want     scheduler.Outcome
	}{
		{"one sustained", []scheduler.Outcome{S}, false, S},
		{"one unresolved", []scheduler.Outcome{U}, false, U},
		{"one unresolved, repeated", []scheduler.Outcome{U}, true, N},
		{"most sustained", []scheduler.Outcome{S, S, U}, false, S},
		{"resolution could give a majority", []scheduler.Outcome{S, U, N}, false, U},
		{"half failed, resolved", []scheduler.Outcome{S, N, U, N}, false, N},
		{"two of three failed", []scheduler.Outcome{N, U, N}, false, N},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reasons := make([]string, len(tc.outcomes))
			for i := range reasons {
				reasons[i] = "why"
			}
			got, _ := scheduler.DecideProbe(tc.outcomes, reasons, tc.repeat)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestPlanSearchRepeatsAnUnresolvedProbe steps a search by hand: an
// unresolved probe at 40,000 msg/s is repeated at the same load with the
// window doubled and the bounds untouched; resolved there, the search goes
// on from the experiment's own window; a repeat still unresolved counts as
// not sustained.
func TestPlanSearchRepeatsAnUnresolvedProbe(t *testing.T) {
	t.Parallel()
	base := scheduler.RunRecord{ExperimentID: "e", RunID: "e-r0000", State: events.RunStateDone,
		Config: spec.RunConfig{Phases: spec.Phases{Measure: spec.Duration{Duration: 10 * time.Second}}, Workload: spec.Workload{RatePerSec: 20_000}}}
	runs := map[string]scheduler.RunRecord{base.RunID: base}
	lookup := func(id string) (scheduler.RunRecord, bool) { r, ok := runs[id]; return r, ok }
	e := scheduler.ExperimentRecord{ID: "e", RunIDs: []string{base.RunID}, Search: &scheduler.SearchState{
		Search: spec.Search{Start: 20_000, Max: 400_000, Tolerance: 0.1}, Repetitions: 1, MinRatio: 0.95, Lo: 20_000,
		Probes: []scheduler.Probe{{Rate: 20_000, Runs: []string{base.RunID}, Decided: true, Sustained: true}, {Rate: 40_000, Runs: []string{"e-r0001"}}}}}
	e.RunIDs = append(e.RunIDs, "e-r0001")
	runs["e-r0001"] = scheduler.RunRecord{RunID: "e-r0001", State: events.RunStateDone}
	delivered := func(rate float64, flag float64, ok float64) map[string]float64 {
		return map[string]float64{results.OfferedRateEPS: rate, results.ThroughputEPS: rate, results.LagSLOOK: ok,
			results.LagSLOThreshold: 2000, results.FlagMetric(results.FlagLagVerdictUnresolved): flag}
	}
	metrics := map[string]map[string]float64{"e-r0001": delivered(40_000, 1, 1)}

	// Unresolved: the same load again, twice the window, no bound moved.
	q, next, err := scheduler.PlanSearch(e, lookup, metrics, 1)
	require.NoError(t, err)
	require.Equal(t, 20_000.0, q.Lo)
	require.Zero(t, q.Hi)
	require.False(t, q.Done)
	decided := q.Probes[1]
	require.True(t, decided.Decided && decided.Unresolved && !decided.Sustained, "%+v", decided)
	repeat := q.Probes[2]
	require.Equal(t, 40_000.0, repeat.Rate)
	require.True(t, repeat.Repeat)
	require.Equal(t, 20*time.Second, repeat.Measure.Duration)
	require.Len(t, next, 1)
	require.Equal(t, 20*time.Second, next[0].Config.Phases.Measure.Duration)
	require.Equal(t, 40_000.0, next[0].Config.Workload.RatePerSec)
	require.Equal(t, map[string]string{"workload.ratePerSec": "40000", "phases.measure": "20s"}, next[0].Factors)

	// Resolved and sustained with the longer window: double, at the
	// experiment's window.
	e2 := e
	e2.Search = &q
	e2.RunIDs = append(append([]string(nil), e.RunIDs...), next[0].RunID)
	runs[next[0].RunID] = scheduler.RunRecord{RunID: next[0].RunID, State: events.RunStateDone}
	metrics[next[0].RunID] = delivered(40_000, 0, 1)
	q2, next2, err := scheduler.PlanSearch(e2, lookup, metrics, 2)
	require.NoError(t, err)
	require.Equal(t, 40_000.0, q2.Lo)
	require.True(t, q2.Probes[2].Sustained)
	require.False(t, q2.Probes[2].Unresolved)
	require.Equal(t, 80_000.0, next2[0].Config.Workload.RatePerSec)
	require.Equal(t, 10*time.Second, next2[0].Config.Phases.Measure.Duration)
	require.False(t, q2.Probes[3].Repeat)

	// Still unresolved with the longer window: not sustained, bisect.
	metrics[next[0].RunID] = delivered(40_000, 1, 1)
	q3, next3, err := scheduler.PlanSearch(e2, lookup, metrics, 2)
	require.NoError(t, err)
	last := q3.Probes[2]
	require.True(t, last.Decided && last.Unresolved && !last.Sustained, "%+v", last)
	require.Contains(t, last.Reason, "still unresolved with a window twice as long")
	require.Equal(t, 40_000.0, q3.Hi)
	require.Equal(t, 30_000.0, next3[0].Config.Workload.RatePerSec)
}

// TestCapacitySearchRepeatsUnresolvedProbe runs a whole search on the
// scheduler against a system of capacity 7300 msg/s whose first run at
// 4000 msg/s reports an unresolved lag verdict: that probe is repeated with
// twice the window, the search finds the same capacity as without it, and
// its answer says one probe was unresolved.
func TestCapacitySearchRepeatsUnresolvedProbe(t *testing.T) {
	t.Parallel()
	var once sync.Once
	h, _ := newHarness(t, nil, func(h *harness) {
		h.capacity = 7300
		h.lagUnresolved = func(m *events.RunMeasured) bool {
			hit := false
			if m.OfferedRate == 4000 {
				once.Do(func() { hit = true })
			}
			return hit
		}
	})
	factors, got := runSearch(t, h, "exp-u")
	require.Len(t, factors, 9, "the 8 probes of TestCapacitySearchDoublesThenBisects and one repeat: %v", factors)
	require.Contains(t, factors, `{"phases.measure":"100ms","workload.ratePerSec":"4000"}`)
	require.Equal(t, 7250.0, got[results.CapacityMsgPerS], "probes: %v", factors)
	require.Equal(t, 9.0, got[results.SearchProbes])
	require.Equal(t, 1.0, got[results.SearchProbesUnresolved])
}

// TestCapacitySearchJudgesTheRetry: the 4000 msg/s probe's run fails to
// provision (transient) and is retried. The probe is judged by the retry,
// which sustains the load — judged by the failed first attempt it was "run
// failed", and the search answered 3875 msg/s for a system of 7300.
func TestCapacitySearchJudgesTheRetry(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) {
		h.capacity = 7300
		h.onProvide = only("exp-ra-r0002", func(m *events.RunProvision) []events.Message {
			return []events.Message{events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Transient: true,
				Reason: "create topics: dial tcp 127.0.0.1:9092: connection refused"}}
		})
	})
	_, got := runSearch(t, h, "exp-ra")
	runs := h.runsByID("exp-ra")
	require.Equal(t, events.RunStateFailed, runs["exp-ra-r0002"].State)
	require.Equal(t, events.RunStateDone, runs["exp-ra-r0002-a1"].State)
	require.Equal(t, 7250.0, got[results.CapacityMsgPerS])
	require.Equal(t, 50.0, got[results.CapacitySUTMicroJPerEvent])
}

// TestCapacitySearchSaysWhenThePlatformBoundsIt: above 7300 msg/s every
// run's measurement is invalid (the load generator cannot deliver it, as
// above 640,000 msg/s on this machine), retried once and invalid again.
// The search answers 7250 msg/s as before, but says that the probes above
// could not be measured and that the capacity is a lower bound.
func TestCapacitySearchSaysWhenThePlatformBoundsIt(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil, func(h *harness) {
		h.capacity = 1_000_000 // the system under test would sustain it
		h.onMeasured = func(m *events.RunMeasured) []events.Message {
			if m.OfferedRate <= 7300 {
				return nil
			}
			return []events.Message{events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, Invalid: true,
				Reason: "offered load not delivered in the measured window: 60 of 100 events"}}
		}
	})
	factors, got := runSearch(t, h, "exp-pb")
	require.Equal(t, 7250.0, got[results.CapacityMsgPerS], "probes: %v", factors)
	require.Equal(t, 2.0, got[results.SearchProbesInvalid], "8000 and 7500 msg/s, each retried once: %v", factors)
	require.Equal(t, 1.0, got[results.CapacityLowerBound])
	require.Equal(t, 0.0, got[results.SearchProbesUnresolved])
}
