package analyzer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
)

// ciCrossesZero names the note on intervals crossing zero.
const ciCrossesZero = "ci_crosses_zero"

// errNoRuns means an experiment has no stored runs.
var errNoRuns = errors.New("no runs stored")

// Results assembles an experiment's runs, results and per-configuration
// statistics.
func (a *Analyzer) Results(ctx context.Context, experimentID string) (results.ExperimentResults, error) {
	out := results.ExperimentResults{ExperimentID: experimentID, ConfidenceLevel: a.cfg.ConfidenceLevel, CVThreshold: a.cfg.CVThreshold,
		Runs: []results.RunResults{}, Configs: []results.ConfigResults{}, ParetoFront: []string{}, Notes: map[string]string{}}
	runs, err := a.store.Runs(ctx, experimentID)
	if err != nil {
		return out, err
	}
	if len(runs) == 0 {
		return out, fmt.Errorf("experiment %s: %w", experimentID, errNoRuns)
	}
	if out.Provenance, err = a.store.Provenance(ctx, experimentID); err != nil {
		return out, err
	}
	res, err := a.store.Results(ctx, experimentID)
	if err != nil {
		return out, err
	}
	byRun := map[string]int{}
	for _, r := range runs {
		rr := results.RunResults{RunID: r.RunID, Index: r.Index, Repetition: r.Repetition, ConfigHash: r.ConfigHash, State: r.State, Reason: r.Reason,
			MeasureStartMs: r.MeasureStartMs, MeasureEndMs: r.MeasureEndMs, Metrics: map[string]float64{}, Details: []results.ResultDetail{}}
		_ = json.Unmarshal([]byte(r.Factors), &rr.Factors)
		byRun[r.RunID] = len(out.Runs)
		out.Runs = append(out.Runs, rr)
	}
	for _, r := range res {
		i, ok := byRun[r.RunID]
		if !ok {
			continue
		}
		rr := &out.Runs[i]
		if r.Scope == results.ScopeRun {
			rr.Metrics[r.Metric] = r.Value
			rr.Estimated = rr.Estimated || r.Estimated
			if _, ok := results.FlagOf(r.Metric); ok && r.Value == 1 {
				if m, ok := results.Lookup(r.Metric); ok {
					out.Notes[r.Metric] = m.Help
				}
			}
			continue
		}
		rr.Details = append(rr.Details, results.ResultDetail{Scope: r.Scope, Subject: r.Subject, Metric: r.Metric, Value: r.Value, Unit: r.Unit,
			Estimated: r.Estimated})
	}
	sums, err := a.store.ConfigResults(ctx, experimentID)
	if err != nil {
		return out, err
	}
	byConfig := map[string]int{}
	for _, s := range sums {
		i, ok := byConfig[s.ConfigHash]
		if !ok {
			c := results.ConfigResults{ConfigHash: s.ConfigHash, Metrics: map[string]results.MetricStats{}, CVFlagged: []string{}}
			_ = json.Unmarshal([]byte(s.Factors), &c.Factors)
			i = len(out.Configs)
			byConfig[s.ConfigHash] = i
			out.Configs = append(out.Configs, c)
		}
		c := &out.Configs[i]
		c.Runs = max(c.Runs, s.N)
		c.Metrics[s.Metric] = results.MetricStats{Unit: s.Unit, N: s.N, Mean: results.Float(s.Mean), SD: results.Float(s.SD), CV: results.Float(s.CV),
			CILow: results.Float(s.CILow), CIHigh: results.Float(s.CIHigh), Median: results.Float(s.Median), Min: results.Float(s.Min), Max: results.Float(s.Max),
			CVFlag: s.CVFlag, Estimated: s.Estimated, CICrossesZero: s.N >= 2 && results.CICrossesZero(s.Metric, s.CILow)}
		if c.Metrics[s.Metric].CICrossesZero {
			out.Notes[ciCrossesZero] = results.CICrossesZeroNote
		}
		if s.CVFlag {
			c.CVFlagged = append(c.CVFlagged, s.Metric)
		}
	}
	pts := make([]stats.Point, len(out.Configs))
	for i, c := range out.Configs {
		pts[i] = stats.Point{X: meanOf(c.Metrics, results.ThroughputEPS), Y: meanOf(c.Metrics, results.SUTMicroJPerEvent)}
	}
	for _, i := range stats.ParetoFront(pts) {
		out.Configs[i].Pareto = true
		out.ParetoFront = append(out.ParetoFront, out.Configs[i].ConfigHash)
	}
	return out, nil
}

func meanOf(m map[string]results.MetricStats, metric string) float64 {
	s, ok := m[metric]
	if !ok {
		return math.NaN()
	}
	return float64(s.Mean)
}

// RegisterHTTP adds the results API to mux:
// GET /v1/experiments/{id}/results[?details=false] (details=false leaves out
// the node, zone, target and role rows of each run). It needs a viewer
// token (pkg/auth).
func (a *Analyzer) RegisterHTTP(mux *http.ServeMux) {
	mux.Handle("GET /v1/experiments/{id}/results", a.guard.Require(auth.Viewer, http.HandlerFunc(a.serveResults)))
}

func (a *Analyzer) serveResults(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	res, err := a.Results(r.Context(), id)
	if r.URL.Query().Get("details") == "false" {
		for i := range res.Runs {
			res.Runs[i].Details = []results.ResultDetail{}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errNoRuns) {
			status = http.StatusNotFound
		} else {
			a.logger.Warn("results request failed", zap.String("experiment_id", id), zap.Error(err))
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
}
