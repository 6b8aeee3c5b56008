package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

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

// Probe is one load level and its runs.
type Probe struct {
	Rate      float64  `json:"rate"`
	Runs      []string `json:"runs"`
	Decided   bool     `json:"decided"`
	Sustained bool     `json:"sustained"`
	Reason    string   `json:"reason,omitempty"`
}

// ResultsReader reads stored run results (the analyzer's).
type ResultsReader interface {
	Results(ctx context.Context, experimentID string) ([]store.Result, error)
	ReplaceResults(ctx context.Context, experimentID, runID string, results []store.Result) error
}

// searchDue reports a search whose current probe has finished undecided.
func (s *Scheduler) searchDue(e ExperimentRecord) bool {
	if e.Search == nil || e.Search.Done || len(e.Search.Probes) == 0 || e.State == "cancelled" {
		return false
	}
	p := e.Search.Probes[len(e.Search.Probes)-1]
	if p.Decided {
		return false
	}
	for _, id := range p.Runs {
		r, ok := s.view.run(id)
		if !ok || !Terminal(r.State) || r.retryDue(s.cfg.Retries) {
			return false
		}
	}
	return true
}

// sustained judges one finished run from its stored results.
func sustained(r RunRecord, metrics map[string]float64, minRatio float64) (bool, string) {
	if r.State != StateDone {
		return false, "run " + r.State
	}
	offered, thr := metrics[results.OfferedRateEPS], metrics[results.ThroughputEPS]
	if offered <= 0 {
		return false, "no offered rate in the results"
	}
	if thr < minRatio*offered {
		return false, fmt.Sprintf("throughput %.0f/s < %.0f%% of offered %.0f/s", thr, minRatio*100, offered)
	}
	if ok, has := metrics[results.LagSLOOK]; has && ok == 0 {
		return false, fmt.Sprintf("lag trend %.0f msg/s over the SLO", metrics[results.LagTrendSlope])
	}
	return true, ""
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
		q := e.Search
		p := &q.Probes[len(q.Probes)-1]
		yes, reasons := 0, ""
		for _, rid := range p.Runs {
			r, _ := s.view.run(rid)
			ok, why := sustained(r, byRun[rid], q.MinRatio)
			if ok {
				yes++
			} else if reasons == "" {
				reasons = why
			}
		}
		p.Decided, p.Sustained, p.Reason = true, yes*2 > len(p.Runs), reasons
		next := 0.0
		if p.Sustained {
			q.Lo = p.Rate
			switch {
			case q.Hi == 0 && p.Rate >= q.Max:
				q.Done, q.Capacity = true, p.Rate // sustained up to the ceiling
			case q.Hi == 0:
				next = min(p.Rate*2, q.Max)
			default:
				next = (q.Lo + q.Hi) / 2
			}
		} else {
			q.Hi = p.Rate
			if q.Lo == 0 {
				next = p.Rate / 2
				if next < 1 {
					q.Done, q.Capacity = true, 0
				}
			} else {
				next = (q.Lo + q.Hi) / 2
			}
		}
		if !q.Done && q.Lo > 0 && q.Hi > 0 && (q.Hi-q.Lo)/q.Lo <= q.Tolerance {
			q.Done, q.Capacity = true, q.Lo
		}
		newRuns = newRuns[:0]
		if q.Done {
			return true, nil
		}
		base, ok := s.view.run(e.RunIDs[0])
		if !ok {
			return false, fmt.Errorf("search %s: first run missing", id)
		}
		cfg, err := base.Config.With(map[string]string{"workload.ratePerSec": strconv.FormatFloat(next, 'f', 0, 64)})
		if err != nil {
			return false, err
		}
		probe := Probe{Rate: cfg.Workload.RatePerSec}
		now := s.nowMs()
		for rep := 0; rep < q.Repetitions; rep++ {
			rr := RunRecord{ExperimentID: id, RunID: fmt.Sprintf("%s-r%04d", id, len(e.RunIDs)), Index: len(e.RunIDs), Repetition: rep,
				Factors: map[string]string{"workload.ratePerSec": strconv.FormatFloat(probe.Rate, 'f', -1, 64)}, Config: cfg,
				ConfigHash: spec.Hash(cfg), State: StatePending, EnteredMs: now, CreatedMs: now}
			// The probe's run keys are created before the experiment record
			// that lists them is written, in this update, as retry() does:
			// a failed create fails the step, which the next tick repeats,
			// and a crash in between leaves at most unlisted keys that the
			// repeated step takes over — never a probe whose runs do not
			// exist, which would leave the search "running" forever.
			vr, err := s.createPendingRun(ctx, rr)
			if err != nil {
				return false, fmt.Errorf("store probe run %s: %w", rr.RunID, err)
			}
			e.RunIDs = append(e.RunIDs, rr.RunID)
			probe.Runs = append(probe.Runs, rr.RunID)
			newRuns = append(newRuns, vr)
		}
		q.Probes = append(q.Probes, probe)
		return true, nil
	})
	if err != nil || !changed {
		return err
	}
	for _, vr := range newRuns {
		s.view.putRun(vr)
		s.persistRun(ctx, vr)
	}
	s.view.putExperiment(ve)
	q := ve.Value.Search
	last := q.Probes[len(q.Probes)-1]
	if q.Done {
		s.logger.Info("capacity search finished", zap.String("experiment_id", id), zap.Float64("capacity_msg_per_s", q.Capacity))
		return s.storeCapacity(ctx, ve.Value, byRun)
	}
	s.logger.Info("capacity search probe", zap.String("experiment_id", id), zap.Float64("rate", last.Rate), zap.Float64("lo", q.Lo), zap.Float64("hi", q.Hi))
	return nil
}

// storeCapacity records the search's answer as experiment-scope results:
// the capacity and the energy per event measured at that load.
func (s *Scheduler) storeCapacity(ctx context.Context, e ExperimentRecord, byRun map[string]map[string]float64) error {
	q := e.Search
	rows := []store.Result{
		{Scope: results.ScopeExperiment, Metric: results.CapacityMsgPerS, Value: q.Capacity, Unit: results.Unit(results.CapacityMsgPerS)},
		{Scope: results.ScopeExperiment, Metric: results.SearchProbes, Value: float64(len(q.Probes)), Unit: results.Unit(results.SearchProbes)},
	}
	var sum float64
	var n int
	var est bool
	for _, p := range q.Probes {
		if p.Rate != q.Capacity || !p.Sustained {
			continue
		}
		for _, rid := range p.Runs {
			if v, ok := byRun[rid][results.SUTMicroJPerEvent]; ok {
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
// rr (the step may have decided differently then); started, it is kept.
func (s *Scheduler) createPendingRun(ctx context.Context, rr RunRecord) (versioned[RunRecord], error) {
	rev, err := s.kv.create(ctx, runKey(rr.RunID), rr)
	if err == nil {
		return versioned[RunRecord]{rr, rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return versioned[RunRecord]{}, err
	}
	vr, _, err := update(ctx, s.kv, runKey(rr.RunID), func(cur *RunRecord) (bool, error) {
		if cur.State != StatePending || cur.ConfigHash == rr.ConfigHash {
			return false, nil
		}
		*cur = rr
		return true, nil
	})
	return vr, err
}
