package analyzer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
)

// ExperimentResults is the JSON document of GET /v1/experiments/{id}/results.
type ExperimentResults struct {
	ExperimentID    string          `json:"experiment_id"`
	ConfidenceLevel float64         `json:"confidence_level"`
	CVThreshold     float64         `json:"cv_threshold"`
	Runs            []RunResults    `json:"runs"`
	Configs         []ConfigResults `json:"configs"`
	// ParetoFront lists the configurations no other beats in both mean
	// throughput and mean SUT energy per event, by increasing throughput.
	ParetoFront []string `json:"pareto_front"`
	// Provenance is what the results were produced from (spec, code,
	// machine, seed, meters).
	Provenance results.Provenance `json:"provenance"`
	// Notes explain, by name, the flags the runs carry and the marks on
	// statistics (ci_crosses_zero), so no marked figure reads as plain.
	Notes map[string]string `json:"notes"`
}

// RunResults is one run with its results.
type RunResults struct {
	RunID          string             `json:"run_id"`
	Index          uint32             `json:"index"`
	Repetition     uint32             `json:"repetition"`
	ConfigHash     string             `json:"config_hash"`
	Factors        map[string]string  `json:"factors"`
	State          string             `json:"state"`
	Reason         string             `json:"reason,omitempty"`
	MeasureStartMs int64              `json:"measure_start_ms"`
	MeasureEndMs   int64              `json:"measure_end_ms"`
	Estimated      bool               `json:"estimated"`
	Metrics        map[string]float64 `json:"metrics"` // run scope
	Details        []ResultDetail     `json:"details"` // node, zone, target and role scopes
}

// ResultDetail is one result row below run scope.
type ResultDetail struct {
	Scope     string  `json:"scope"`
	Subject   string  `json:"subject"`
	Metric    string  `json:"metric"`
	Value     float64 `json:"value"`
	Unit      string  `json:"unit"`
	Estimated bool    `json:"estimated"`
}

// ConfigResults is one configuration's statistics across repetitions.
type ConfigResults struct {
	ConfigHash string                 `json:"config_hash"`
	Factors    map[string]string      `json:"factors"`
	Runs       int                    `json:"runs"`
	Metrics    map[string]MetricStats `json:"metrics"`
	CVFlagged  []string               `json:"cv_flagged"` // metrics whose CV exceeds the threshold
	Pareto     bool                   `json:"pareto_optimal"`
}

// MetricStats is a stats.Summary for JSON: undefined values are null.
type MetricStats struct {
	Unit      string    `json:"unit"`
	N         int       `json:"n"`
	Mean      jsonFloat `json:"mean"`
	SD        jsonFloat `json:"sd"`
	CV        jsonFloat `json:"cv"`
	CILow     jsonFloat `json:"ci_low"`
	CIHigh    jsonFloat `json:"ci_high"`
	Median    jsonFloat `json:"median"`
	Min       jsonFloat `json:"min"`
	Max       jsonFloat `json:"max"`
	CVFlag    bool      `json:"cv_flag"`
	Estimated bool      `json:"estimated"`
	// CICrossesZero: the interval reaches below zero for a quantity that
	// cannot be negative (results.CICrossesZero); notes.ci_crosses_zero
	// says what that means.
	CICrossesZero bool `json:"ci_crosses_zero"`
}

// jsonFloat encodes NaN and infinities as null.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// ciCrossesZero names the note on intervals crossing zero.
const ciCrossesZero = "ci_crosses_zero"

// errNoRuns means an experiment has no stored runs.
var errNoRuns = errors.New("no runs stored")

// Results assembles an experiment's runs, results and per-configuration
// statistics.
func (a *Analyzer) Results(ctx context.Context, experimentID string) (ExperimentResults, error) {
	out := ExperimentResults{ExperimentID: experimentID, ConfidenceLevel: a.cfg.ConfidenceLevel, CVThreshold: a.cfg.CVThreshold,
		Runs: []RunResults{}, Configs: []ConfigResults{}, ParetoFront: []string{}, Notes: map[string]string{}}
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
		rr := RunResults{RunID: r.RunID, Index: r.Index, Repetition: r.Repetition, ConfigHash: r.ConfigHash, State: r.State, Reason: r.Reason,
			MeasureStartMs: r.MeasureStartMs, MeasureEndMs: r.MeasureEndMs, Metrics: map[string]float64{}, Details: []ResultDetail{}}
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
		rr.Details = append(rr.Details, ResultDetail{Scope: r.Scope, Subject: r.Subject, Metric: r.Metric, Value: r.Value, Unit: r.Unit,
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
			c := ConfigResults{ConfigHash: s.ConfigHash, Metrics: map[string]MetricStats{}, CVFlagged: []string{}}
			_ = json.Unmarshal([]byte(s.Factors), &c.Factors)
			i = len(out.Configs)
			byConfig[s.ConfigHash] = i
			out.Configs = append(out.Configs, c)
		}
		c := &out.Configs[i]
		c.Runs = max(c.Runs, s.N)
		c.Metrics[s.Metric] = MetricStats{Unit: s.Unit, N: s.N, Mean: jsonFloat(s.Mean), SD: jsonFloat(s.SD), CV: jsonFloat(s.CV),
			CILow: jsonFloat(s.CILow), CIHigh: jsonFloat(s.CIHigh), Median: jsonFloat(s.Median), Min: jsonFloat(s.Min), Max: jsonFloat(s.Max),
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

func meanOf(m map[string]MetricStats, metric string) float64 {
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
			res.Runs[i].Details = []ResultDetail{}
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
