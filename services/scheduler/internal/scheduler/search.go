package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
)

// SearchState is a capacity search in progress (see spec.Search).
type SearchState struct {
	spec.Search
	Repetitions int     `json:"repetitions"`
	MinRatio    float64 `json:"min_ratio"`
	Lo          float64 `json:"lo"` // highest sustained load so far
	Hi          float64 `json:"hi"` // lowest unsustained load so far
	Probes      []Probe `json:"probes"`
	Done        bool    `json:"done"`
	Capacity    float64 `json:"capacity"`
}

// unresolved counts the probes whose lag verdict was unresolved.
func (q SearchState) unresolved() int {
	return countProbes(q.Probes, func(p Probe) bool { return p.Unresolved })
}

// invalid counts the probes that could not be measured (Probe.Invalid).
func (q SearchState) invalid() int {
	return countProbes(q.Probes, func(p Probe) bool { return p.Invalid })
}

// lowerBound reports a capacity whose upper bound, the lowest load not
// sustained, is a probe that could not be measured: the system under test
// may sustain more.
func (q SearchState) lowerBound() bool {
	return q.Hi > 0 && slices.ContainsFunc(q.Probes, func(p Probe) bool { return p.Rate == q.Hi && p.Invalid })
}

func countProbes(ps []Probe, f func(Probe) bool) int {
	n := 0
	for _, p := range ps {
		if f(p) {
			n++
		}
	}
	return n
}

// Probe is one load level and its runs.
type Probe struct {
	Rate      float64  `json:"rate"`
	Runs      []string `json:"runs"`
	Decided   bool     `json:"decided"`
	Sustained bool     `json:"sustained"`
	Reason    string   `json:"reason,omitempty"`
	// Unresolved: the runs' lag verdicts could not tell (see
	// decideProbe); such a probe is repeated once, as Repeat, with a
	// measurement window Measure long (twice the experiment's).
	Unresolved bool          `json:"unresolved,omitempty"`
	Repeat     bool          `json:"repeat,omitempty"`
	Measure    spec.Duration `json:"measure,omitzero"`
	// Invalid: every run (last attempt) failed as an invalid measurement
	// — the platform did not deliver the load or lost samples — so the
	// probe says nothing about the system under test; it counts as not
	// sustained, which makes a capacity bounded by it a lower bound.
	Invalid bool `json:"invalid,omitempty"`
}

// ResultsReader reads stored run results (the analyzer's).
type ResultsReader interface {
	Results(ctx context.Context, experimentID string) ([]store.Result, error)
	ReplaceResults(ctx context.Context, experimentID, runID string, results []store.Result) error
}

// searchDue reports a search whose current probe has finished undecided.
func (s *Scheduler) searchDue(e ExperimentRecord) bool {
	if e.Search == nil || e.Search.Done || len(e.Search.Probes) == 0 || e.State == events.ExperimentStateCancelled {
		return false
	}
	p := e.Search.Probes[len(e.Search.Probes)-1]
	if p.Decided {
		return false
	}
	for _, id := range p.Runs {
		r, ok := lastAttempt(s.view.run, id)
		if !ok || !events.RunFinal(r.State) || r.retryDue(s.cfg.Retries) {
			return false
		}
	}
	return true
}

// lastAttempt follows a probe's run through its retries (RetriedAs) to the
// latest attempt: a probe is judged by what its retry measured, not by the
// failed first attempt — judged so, a probe at 380,000 msg/s here counted
// as "run failed" while its retry, still running, went on to deliver 99.7 %
// of the load.
func lastAttempt(run func(id string) (RunRecord, bool), id string) (RunRecord, bool) {
	r, ok := run(id)
	for seen := 0; ok && r.RetriedAs != "" && seen < 100; seen++ {
		next, found := run(r.RetriedAs)
		if !found {
			return next, false // the retry is recorded but not seen yet: wait for it
		}
		r = next
	}
	return r, ok
}

// Outcome is what one run, or one probe, says about its load.
type Outcome int

const (
	// NotSustained: the run failed, fell short of the throughput, or its
	// lag grew faster than the SLO allows, resolved.
	NotSustained Outcome = iota
	// Sustained: the throughput was delivered and the lag trend's whole
	// interval is below the threshold.
	Sustained
	// Unresolved: the throughput was delivered but the lag trend's
	// confidence interval contains the SLO's threshold.
	Unresolved
)

// judgeRun judges one finished run from its stored results. Throughput
// below minRatio of the offered load is decisive whatever the lag did;
// otherwise the lag verdict decides, and one whose interval contains the
// threshold (flag lag_verdict_unresolved) is Unresolved, not a failure.
func judgeRun(r RunRecord, metrics map[string]float64, minRatio float64) (Outcome, string) {
	if r.State != events.RunStateDone {
		if r.Reason != "" {
			return NotSustained, "run " + r.State + ": " + r.Reason
		}
		return NotSustained, "run " + r.State
	}
	offered, thr := metrics[results.OfferedRateEPS], metrics[results.ThroughputEPS]
	if offered <= 0 {
		return NotSustained, "no offered rate in the results"
	}
	if thr < minRatio*offered {
		return NotSustained, fmt.Sprintf("throughput %.0f/s < %.0f%% of offered %.0f/s", thr, minRatio*100, offered)
	}
	if metrics[results.FlagMetric(results.FlagLagVerdictUnresolved)] == 1 {
		return Unresolved, fmt.Sprintf("lag trend %.0f msg/s unresolved: its interval %s contains the SLO's %.0f msg/s",
			metrics[results.LagTrendSlope], interval(metrics), metrics[results.LagSLOThreshold])
	}
	if ok, has := metrics[results.LagSLOOK]; has && ok == 0 {
		return NotSustained, fmt.Sprintf("lag trend %.0f msg/s over the SLO", metrics[results.LagTrendSlope])
	}
	return Sustained, ""
}

// interval writes a lag slope's confidence interval; a missing bound is
// unbounded (too few samples).
func interval(metrics map[string]float64) string {
	lo, hi := "−∞", "∞"
	if v, ok := metrics[results.LagTrendSlopeCILow]; ok {
		lo = strconv.FormatFloat(v, 'f', 0, 64)
	}
	if v, ok := metrics[results.LagTrendSlopeCIHigh]; ok {
		hi = strconv.FormatFloat(v, 'f', 0, 64)
	}
	return "[" + lo + ", " + hi + "]"
}

// decideProbe combines a probe's run outcomes: Sustained when most runs
// are, NotSustained when the resolved failures alone are at least half (no
// resolution of the rest could make most sustained), else Unresolved. An
// Unresolved probe that is itself the repeat of one counts as NotSustained:
// a capacity is a load shown to be sustained, and twice the window could
// not show it. reason is the first run's that is not sustained.
func decideProbe(outcomes []Outcome, reasons []string, repeat bool) (Outcome, string) {
	var yes, no int
	reason := ""
	for i, o := range outcomes {
		switch o {
		case Sustained:
			yes++
		case NotSustained:
			no++
		}
		if o != Sustained && reason == "" {
			reason = reasons[i]
		}
	}
	switch {
	case yes*2 > len(outcomes):
		return Sustained, reason
	case no*2 >= len(outcomes) || repeat:
		if no*2 < len(outcomes) {
			reason = "still unresolved with a window twice as long: " + reason
		}
		return NotSustained, reason
	default:
		return Unresolved, reason
	}
}

// advanceSearch decides the finished probe and adds the next one, or
// concludes the search. It is idempotent: the decision is a
// revision-checked write of the experiment record.
func (s *Scheduler) advanceSearch(ctx context.Context, id string) error {
	cur, ok := s.view.experiment(id)
	if !ok || !s.searchDue(cur) {
		return nil
	}
	res, err := s.results.Results(ctx, id)
	if err != nil {
		return err
	}
	byRun := map[string]map[string]float64{}
	for _, r := range res {
		if r.Scope != results.ScopeRun {
			continue
		}
		if byRun[r.RunID] == nil {
			byRun[r.RunID] = map[string]float64{}
		}
		byRun[r.RunID][r.Metric] = r.Value
	}
	var newRuns []versioned[RunRecord]
	ve, changed, err := update(ctx, s.kv, expKey(id), func(e *ExperimentRecord) (bool, error) {
		if !s.searchDue(*e) {
			return false, nil
		}
		next, err := planSearch(*e, s.view.run, byRun, s.nowMs())
		if err != nil {
			return false, err
		}
		// The probe's run keys are created before the experiment record
		// that lists them is written, in this update, as retry() does: a
		// failed create fails the step, which the next tick repeats, and a
		// crash in between leaves at most unlisted keys that the repeated
		// step takes over — never a probe whose runs do not exist, which
		// would leave the search "running" forever.
		newRuns = newRuns[:0]
		for _, rr := range next.runs {
			vr, err := s.createPendingRun(ctx, rr)
			if err != nil {
				return false, fmt.Errorf("store probe run %s: %w", rr.RunID, err)
			}
			newRuns = append(newRuns, vr)
		}
		next.apply(e)
		return true, nil
	})
	if err != nil || !changed {
		return err
	}
	for _, vr := range newRuns {
		s.view.putRun(vr)
		s.persistRun(vr)
	}
	s.view.putExperiment(ve)
	q := ve.Value.Search
	last := q.Probes[len(q.Probes)-1]
	if q.Done {
		s.logger.Info("capacity search finished", zap.String("experiment_id", id), zap.Float64("capacity_msg_per_s", q.Capacity),
			zap.Int("probes", len(q.Probes)), zap.Int("probes_unresolved", q.unresolved()),
			zap.Int("probes_invalid", q.invalid()), zap.Bool("lower_bound", q.lowerBound()))
		return s.storeCapacity(ctx, ve.Value, s.view.run, byRun)
	}
	s.logger.Info("capacity search probe", zap.String("experiment_id", id), zap.Float64("rate", last.Rate), zap.Float64("lo", q.Lo), zap.Float64("hi", q.Hi),
		zap.Bool("repeat", last.Repeat))
	return nil
}

// searchPlan is one step of a capacity search: the search state after the
// finished probe was decided, and the runs of the next probe (none when the
// search is done).
type searchPlan struct {
	search SearchState
	runs   []RunRecord
}

// apply writes the step into the experiment record.
func (p searchPlan) apply(e *ExperimentRecord) {
	q := p.search
	e.Search = &q
	for _, r := range p.runs {
		e.RunIDs = append(e.RunIDs, r.RunID)
	}
}

// planSearch decides e's finished probe from its runs (run looks them up)
// and their results (metrics by run), and plans the next one; it does no
// I/O. The rule (decideProbe): a probe is sustained when most of its runs
// are; throughput below the spec's minThroughputRatio alone fails a run;
// a probe whose lag verdicts are unresolved is repeated once at the same
// load with the measurement window doubled (a Theil–Sen interval narrows
// about 2.8-fold when the window and its samples double) before it counts,
// and counts as not sustained if still unresolved. Neither bound moves on
// an unresolved probe.
func planSearch(e ExperimentRecord, run func(id string) (RunRecord, bool), metrics map[string]map[string]float64, nowMs int64) (searchPlan, error) {
	q := *e.Search
	q.Probes = slices.Clone(q.Probes)
	p := &q.Probes[len(q.Probes)-1]
	outcomes, reasons := make([]Outcome, len(p.Runs)), make([]string, len(p.Runs))
	invalid := len(p.Runs) > 0
	for i, rid := range p.Runs {
		r, _ := lastAttempt(run, rid)
		outcomes[i], reasons[i] = judgeRun(r, metrics[r.RunID], q.MinRatio)
		invalid = invalid && r.State == events.RunStateFailed && strings.HasPrefix(r.Reason, invalidMeasurement)
	}
	p.Invalid = invalid
	outcome, reason := decideProbe(outcomes, reasons, p.Repeat)
	p.Decided, p.Sustained, p.Reason = true, outcome == Sustained, reason
	p.Unresolved = outcome == Unresolved || (p.Repeat && slices.Contains(outcomes, Unresolved) && outcome == NotSustained)
	base, ok := run(e.RunIDs[0])
	if !ok {
		return searchPlan{}, fmt.Errorf("search %s: first run missing", e.ID)
	}
	next := probeSpec{rate: p.Rate}
	if outcome == Unresolved {
		next.repeat, next.measure = true, spec.Duration{Duration: 2 * base.Config.Phases.Measure.Duration}
	} else {
		step := NextProbe(q.Search, q.Lo, q.Hi, p.Rate, outcome == Sustained)
		q.Lo, q.Hi, q.Done, q.Capacity = step.Lo, step.Hi, step.Done, step.Capacity
		if q.Done {
			return searchPlan{search: q}, nil
		}
		next.rate = step.Next
	}
	return plan(e, base, q, next, nowMs)
}

// probeSpec is the next probe's load, and its longer window when it
// repeats an unresolved one.
type probeSpec struct {
	rate    float64
	repeat  bool
	measure spec.Duration
}

// plan adds probe ps, with its runs, to search q of e; base is the run whose
// configuration the probes vary.
func plan(e ExperimentRecord, base RunRecord, q SearchState, ps probeSpec, nowMs int64) (searchPlan, error) {
	set := map[string]string{"workload.ratePerSec": strconv.FormatFloat(ps.rate, 'f', 0, 64)}
	if ps.repeat {
		set["phases.measure"] = ps.measure.String()
	}
	cfg, err := base.Config.With(set)
	if err != nil {
		return searchPlan{}, err
	}
	probe := Probe{Rate: cfg.Workload.RatePerSec, Repeat: ps.repeat}
	factors := map[string]string{"workload.ratePerSec": strconv.FormatFloat(probe.Rate, 'f', -1, 64)}
	if ps.repeat {
		probe.Measure = cfg.Phases.Measure
		factors["phases.measure"] = cfg.Phases.Measure.String()
	}
	out := searchPlan{}
	for rep := 0; rep < q.Repetitions; rep++ {
		index := len(e.RunIDs) + rep
		rr := RunRecord{ExperimentID: e.ID, RunID: fmt.Sprintf("%s-r%04d", e.ID, index), Index: index, Repetition: rep,
			Factors: maps.Clone(factors), Config: cfg, ConfigHash: spec.Hash(cfg), State: events.RunStatePending, EnteredMs: nowMs, CreatedMs: nowMs}
		out.runs = append(out.runs, rr)
		probe.Runs = append(probe.Runs, rr.RunID)
	}
	q.Probes = append(q.Probes, probe)
	out.search = q
	return out, nil
}

// SearchStep is what the capacity search does after a probe.
type SearchStep struct {
	// Lo is the highest sustained load so far, Hi the lowest unsustained
	// one (0: none yet).
	Lo, Hi float64
	// Next is the next probe's load, unless Done.
	Next float64
	// Done ends the search with Capacity, the greatest sustained load
	// found (0 when not even 1 msg/s is).
	Done     bool
	Capacity float64
}

// NextProbe is the capacity search's bisection. Given the bounds so far
// (lo, hi; 0 when none yet) and whether the probe at rate was sustained, it
// doubles the load while every probe is sustained (capped at q.Max, where
// a sustained probe ends the search), halves it while none is (giving up
// below 1 msg/s), and otherwise bisects between the bounds until they are
// within q.Tolerance of the lower one, which is the capacity.
func NextProbe(q spec.Search, lo, hi, rate float64, sustained bool) SearchStep {
	st := SearchStep{Lo: lo, Hi: hi}
	if sustained {
		st.Lo = rate
		switch {
		case hi == 0 && rate >= q.Max:
			st.Done, st.Capacity = true, rate // sustained up to the ceiling
		case hi == 0:
			st.Next = min(rate*2, q.Max)
		default:
			st.Next = (st.Lo + st.Hi) / 2
		}
	} else {
		st.Hi = rate
		if lo == 0 {
			st.Next = rate / 2
			if st.Next < 1 {
				st.Done, st.Capacity = true, 0
			}
		} else {
			st.Next = (st.Lo + st.Hi) / 2
		}
	}
	if !st.Done && st.Lo > 0 && st.Hi > 0 && (st.Hi-st.Lo)/st.Lo <= q.Tolerance {
		st.Done, st.Capacity = true, st.Lo
	}
	if st.Done {
		st.Next = 0
	}
	return st
}

// storeCapacity records the search's answer as experiment-scope results:
// the capacity and the energy per event measured at that load.
func (s *Scheduler) storeCapacity(ctx context.Context, e ExperimentRecord, run func(id string) (RunRecord, bool),
	byRun map[string]map[string]float64) error {
	q := e.Search
	rows := []store.Result{
		{Scope: results.ScopeExperiment, Metric: results.CapacityMsgPerS, Value: q.Capacity, Unit: results.Unit(results.CapacityMsgPerS)},
		{Scope: results.ScopeExperiment, Metric: results.SearchProbes, Value: float64(len(q.Probes)), Unit: results.Unit(results.SearchProbes)},
		{Scope: results.ScopeExperiment, Metric: results.SearchProbesUnresolved, Value: float64(q.unresolved()),
			Unit: results.Unit(results.SearchProbesUnresolved)},
		{Scope: results.ScopeExperiment, Metric: results.SearchProbesInvalid, Value: float64(q.invalid()), Unit: results.Unit(results.SearchProbesInvalid)},
	}
	if q.lowerBound() {
		rows = append(rows, store.Result{Scope: results.ScopeExperiment, Metric: results.CapacityLowerBound, Value: 1, Unit: results.Unit(results.CapacityLowerBound)})
	}
	var sum float64
	var n int
	var est bool
	for _, p := range q.Probes {
		if p.Rate != q.Capacity || !p.Sustained {
			continue
		}
		for _, rid := range p.Runs {
			r, _ := lastAttempt(run, rid)
			if v, ok := byRun[r.RunID][results.SUTMicroJPerEvent]; ok {
				sum += v
				n++
				est = true // energy figures carry the estimated flag of their run; be conservative
			}
		}
	}
	if n > 0 {
		rows = append(rows, store.Result{Scope: results.ScopeExperiment, Metric: results.CapacitySUTMicroJPerEvent, Value: sum / float64(n),
			Unit: results.Unit(results.CapacitySUTMicroJPerEvent), Estimated: est})
	}
	return s.results.ReplaceResults(ctx, e.ID, e.ID+"-search", rows)
}

// createPendingRun creates a run's key, or takes over the key a previous,
// interrupted attempt of the same step created: still pending, it is set to
// rr (the step may have decided differently then, or placed it at another
// index); started, it is kept. A search step and a retry create runs this
// way.
func (s *Scheduler) createPendingRun(ctx context.Context, rr RunRecord) (versioned[RunRecord], error) {
	rev, err := s.kv.create(ctx, runKey(rr.RunID), rr)
	if err == nil {
		return versioned[RunRecord]{rr, rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return versioned[RunRecord]{}, err
	}
	vr, _, err := update(ctx, s.kv, runKey(rr.RunID), func(cur *RunRecord) (bool, error) {
		if cur.State != events.RunStatePending || (cur.ConfigHash == rr.ConfigHash && cur.Index == rr.Index) {
			return false, nil
		}
		*cur = rr
		return true, nil
	})
	return vr, err
}
