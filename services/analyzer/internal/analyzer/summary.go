package analyzer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/store"
)

// updateConfigSummary recomputes the statistics of one configuration from
// the latest results of its runs (those not failed or cancelled, plus
// runID, which may not be marked done yet, minus exclude, which is about to
// fail) and replaces its config_results rows.
func (a *Analyzer) updateConfigSummary(ctx context.Context, experimentID, configHash string, factors map[string]string, runID, exclude string) error {
	ids, err := a.store.ConfigRunIDs(ctx, experimentID, configHash, []string{events.RunStateFailed, events.RunStateCancelled})
	if err != nil {
		return err
	}
	ids = slices.DeleteFunc(withRun(ids, runID), func(id string) bool { return id == exclude })
	values, err := a.store.RunScopeResults(ctx, experimentID, ids)
	if err != nil {
		return err
	}
	fj, err := json.Marshal(factors)
	if err != nil {
		return fmt.Errorf("encode factors of configuration %s: %w", configHash, err)
	}
	return a.store.ReplaceConfigResults(ctx, experimentID, configHash, SummarizeConfig(configHash, string(fj), values, a.cfg))
}

// withRun adds runID ("" for none) to the sorted ids when missing.
func withRun(ids []string, runID string) []string {
	if runID == "" || slices.Contains(ids, runID) {
		return ids
	}
	ids = append(ids, runID)
	sort.Strings(ids)
	return ids
}

// SummarizeConfig describes every run-scope metric of a configuration's
// runs (values ordered by run), adds the median-slope lag verdict when
// slopes exist, and orders rows by metric.
func SummarizeConfig(configHash, factors string, values []store.Result, cfg Config) []store.ConfigResult {
	type acc struct {
		unit string
		xs   []float64
		runs []string
		est  bool
	}
	by := map[string]*acc{}
	for _, v := range values {
		c, ok := by[v.Metric]
		if !ok {
			c = &acc{unit: v.Unit}
			by[v.Metric] = c
		}
		c.xs = append(c.xs, v.Value)
		c.runs = append(c.runs, v.RunID)
		c.est = c.est || v.Estimated
	}
	out := make([]store.ConfigResult, 0, len(by)+1)
	for _, name := range sortedKeys(by) {
		c := by[name]
		s := stats.Describe(c.xs, cfg.ConfidenceLevel)
		out = append(out, store.ConfigResult{ConfigHash: configHash, Factors: factors, Metric: name, Unit: c.unit, Summary: s,
			CVFlag: s.N >= 2 && s.CV > cfg.CVThreshold, Estimated: c.est, RunIDs: c.runs})
	}
	if c, ok := by[results.LagTrendSlope]; ok {
		// The runs' own threshold (their spec's); the flag's for runs
		// analysed before it was recorded.
		threshold := cfg.LagThreshold
		if t, ok := by[results.LagSLOThreshold]; ok && len(t.xs) > 0 {
			threshold = stats.Median(t.xs)
		}
		ok := b2f(stats.Median(c.xs) < threshold)
		s := stats.Summary{N: len(c.xs), Mean: ok, Median: ok, Min: ok, Max: ok, SD: math.NaN(), CV: math.NaN(), Level: cfg.ConfidenceLevel,
			HalfWidth: math.NaN(), CILow: math.NaN(), CIHigh: math.NaN()}
		out = append(out, store.ConfigResult{ConfigHash: configHash, Factors: factors, Metric: results.LagSLOOKMedianSlope,
			Unit: results.Unit(results.LagSLOOKMedianSlope), Summary: s, RunIDs: c.runs})
		sort.Slice(out, func(i, j int) bool { return out[i].Metric < out[j].Metric })
	}
	return out
}
