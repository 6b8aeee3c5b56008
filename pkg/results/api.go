package results

import (
	"encoding/json"
	"math"
	"strconv"
)

// ExperimentResults is the JSON document of the analyzer's results API,
// GET /v1/experiments/{id}/results: the analyzer encodes it and the web
// console decodes it, so both hold to this one declaration.
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
	Provenance Provenance `json:"provenance"`
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
	Unit      string `json:"unit"`
	N         int    `json:"n"`
	Mean      Float  `json:"mean"`
	SD        Float  `json:"sd"`
	CV        Float  `json:"cv"`
	CILow     Float  `json:"ci_low"`
	CIHigh    Float  `json:"ci_high"`
	Median    Float  `json:"median"`
	Min       Float  `json:"min"`
	Max       Float  `json:"max"`
	CVFlag    bool   `json:"cv_flag"`
	Estimated bool   `json:"estimated"`
	// CICrossesZero: the interval reaches below zero for a quantity that
	// cannot be negative (CICrossesZero); notes.ci_crosses_zero
	// says what that means.
	CICrossesZero bool `json:"ci_crosses_zero"`
}

// Float is a statistic that may be undefined (NaN: one repetition has no
// interval): JSON null then, both ways.
type Float float64

// MarshalJSON writes NaN and infinities as null.
func (f Float) MarshalJSON() ([]byte, error) {
	if !f.Defined() {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(f), 'g', -1, 64), nil
}

// UnmarshalJSON reads null as NaN.
func (f *Float) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = Float(math.NaN())
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

// Optional is v for a JSON field that is null when undefined (nil for NaN
// or an infinity), for documents that write statistics as *float64.
func Optional(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Defined reports whether f is a number (not NaN or an infinity).
func (f Float) Defined() bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }
