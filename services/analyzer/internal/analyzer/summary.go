package analyzer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/stats"
)

// ConfigMetric is one run-scope metric of one configuration summarised over
// its repetitions (the analysed runs sharing a config hash).
type ConfigMetric struct {
	ConfigHash string
	Factors    string // JSON object
	Metric     string
	Unit       string
	stats.Summary
	CVFlag    bool // CV above the analyzer's threshold
	Estimated bool
	RunIDs    []string
}

// MetricLagSLOByMedian is the configuration-level lag verdict: Theodolite
// judges repetitions by their median slope.
const MetricLagSLOByMedian = "lag_slo_ok_median_slope"

// writeTargets stores the run's targets with their roles.
func (a *Analyzer) writeTargets(ctx context.Context, m *events.RunMeasured) error {
	if len(m.Targets) == 0 {
		return nil
	}
	batch, err := a.store.Conn().PrepareBatch(ctx, "INSERT INTO run_targets (experiment_id, run_id, target_id, kind, node, role, analyzed_ms)")
	if err != nil {
		return fmt.Errorf("prepare run_targets batch: %w", err)
	}
	v := a.version()
	roles := roleOf(m)
	for _, t := range m.Targets {
		if err := batch.Append(m.ExperimentID, m.RunID, t.ID, t.Kind, t.Node, roles[t.ID], v); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append run target: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert targets of run %s: %w", m.RunID, err)
	}
	return nil
}

// UpdateConfigSummary recomputes the statistics of one configuration from the
// latest results of its runs (those not failed or cancelled, plus runID,
// which may not be marked done yet, minus exclude, which is about to fail)
// and replaces its config_results rows.
func (a *Analyzer) UpdateConfigSummary(ctx context.Context, experimentID, configHash string, factors map[string]string, runID, exclude string) error {
	runIDs, err := a.configRuns(ctx, experimentID, configHash, runID)
	if err != nil {
		return err
	}
	runIDs = slices.DeleteFunc(runIDs, func(id string) bool { return id == exclude })
	values, err := a.runMetrics(ctx, experimentID, runIDs)
	if err != nil {
		return err
	}
	fj, err := json.Marshal(factors)
	if err != nil {
		return fmt.Errorf("encode factors of configuration %s: %w", configHash, err)
	}
	rows := summarizeConfig(configHash, string(fj), values, a.cfg)
	batch, err := a.store.Conn().PrepareBatch(ctx, `INSERT INTO config_results (experiment_id, config_hash, factors, metric, unit, n, mean, sd, cv,
		ci_level, ci_low, ci_high, median, min, max, cv_flag, estimated, run_ids, analyzed_ms)`)
	if err != nil {
		return fmt.Errorf("prepare config_results batch: %w", err)
	}
	v := a.version()
	for _, r := range rows {
		if err := batch.Append(experimentID, r.ConfigHash, r.Factors, r.Metric, r.Unit, uint32(r.N), r.Mean, r.SD, r.CV, r.Level, r.CILow, r.CIHigh,
			r.Median, r.Min, r.Max, u8(r.CVFlag), u8(r.Estimated), r.RunIDs, v); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append config result: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert summary of configuration %s: %w", configHash, err)
	}
	return nil
}

// runValue is one run-scope result of one run.
type runValue struct {
	RunID, Metric, Unit string
	Value               float64
	Estimated           bool
}

// configRuns lists the runs of a configuration that count, by run id.
func (a *Analyzer) configRuns(ctx context.Context, experimentID, configHash, runID string) ([]string, error) {
	rows, err := a.store.Conn().Query(ctx, `SELECT run_id FROM runs FINAL
		WHERE experiment_id = ? AND config_hash = ? AND state NOT IN ('failed', 'cancelled') ORDER BY run_id`, experimentID, configHash)
	if err != nil {
		return nil, fmt.Errorf("query runs of configuration %s: %w", configHash, err)
	}
	defer rows.Close()
	var ids []string
	seen := false
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("scan run of configuration %s: %w", configHash, err)
		}
		ids = append(ids, id)
		seen = seen || id == runID
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read runs of configuration %s: %w", configHash, err)
	}
	if !seen && runID != "" {
		ids = append(ids, runID)
		sort.Strings(ids)
	}
	return ids, nil
}

// runMetrics reads the newest analysis' run-scope results of the given runs,
// ordered by run and metric.
func (a *Analyzer) runMetrics(ctx context.Context, experimentID string, runIDs []string) ([]runValue, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	rows, err := a.store.Conn().Query(ctx, `
		SELECT run_id, metric, unit, value, estimated FROM results FINAL
		WHERE experiment_id = ? AND scope = 'run' AND has(?, run_id)
		  AND (run_id, analyzed_ms) IN (
		    SELECT run_id, max(analyzed_ms) FROM results WHERE experiment_id = ? AND has(?, run_id) GROUP BY run_id)
		ORDER BY run_id, metric`, experimentID, runIDs, experimentID, runIDs)
	if err != nil {
		return nil, fmt.Errorf("query run results of %s: %w", experimentID, err)
	}
	defer rows.Close()
	var out []runValue
	for rows.Next() {
		var v runValue
		var est uint8
		if err := rows.Scan(&v.RunID, &v.Metric, &v.Unit, &v.Value, &est); err != nil {
			return nil, fmt.Errorf("scan run result: %w", err)
		}
		v.Estimated = est == 1
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read run results of %s: %w", experimentID, err)
	}
	return out, nil
}

// summarizeConfig describes every metric of a configuration's runs, adds the
// median-slope lag verdict when slopes exist, and orders rows by metric.
func summarizeConfig(configHash, factors string, values []runValue, cfg Config) []ConfigMetric {
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
	out := make([]ConfigMetric, 0, len(by)+1)
	for _, name := range sortedKeys(by) {
		c := by[name]
		s := stats.Describe(c.xs, cfg.ConfidenceLevel)
		out = append(out, ConfigMetric{ConfigHash: configHash, Factors: factors, Metric: name, Unit: c.unit, Summary: s,
			CVFlag: s.N >= 2 && s.CV > cfg.CVThreshold, Estimated: c.est, RunIDs: c.runs})
	}
	if c, ok := by["lag_trend_slope"]; ok {
		ok := b2f(stats.Median(c.xs) < cfg.LagThreshold)
		s := stats.Summary{N: len(c.xs), Mean: ok, Median: ok, Min: ok, Max: ok, SD: math.NaN(), CV: math.NaN(), Level: cfg.ConfidenceLevel,
			HalfWidth: math.NaN(), CILow: math.NaN(), CIHigh: math.NaN()}
		out = append(out, ConfigMetric{ConfigHash: configHash, Factors: factors, Metric: MetricLagSLOByMedian, Unit: "bool", Summary: s, RunIDs: c.runs})
		sort.Slice(out, func(i, j int) bool { return out[i].Metric < out[j].Metric })
	}
	return out
}

// ConfigSummaries reads the newest per-configuration statistics of an
// experiment, ordered by configuration and metric.
func (a *Analyzer) ConfigSummaries(ctx context.Context, experimentID string) ([]ConfigMetric, error) {
	rows, err := a.store.Conn().Query(ctx, `
		SELECT config_hash, factors, metric, unit, n, mean, sd, cv, ci_level, ci_low, ci_high, median, min, max, cv_flag, estimated, run_ids
		FROM config_results FINAL
		WHERE experiment_id = ? AND (config_hash, analyzed_ms) IN (
		  SELECT config_hash, max(analyzed_ms) FROM config_results WHERE experiment_id = ? GROUP BY config_hash)
		ORDER BY config_hash, metric`, experimentID, experimentID)
	if err != nil {
		return nil, fmt.Errorf("query configuration results of %s: %w", experimentID, err)
	}
	defer rows.Close()
	var out []ConfigMetric
	for rows.Next() {
		var c ConfigMetric
		var n uint32
		var flag, est uint8
		if err := rows.Scan(&c.ConfigHash, &c.Factors, &c.Metric, &c.Unit, &n, &c.Mean, &c.SD, &c.CV, &c.Level, &c.CILow, &c.CIHigh, &c.Median,
			&c.Min, &c.Max, &flag, &est, &c.RunIDs); err != nil {
			return nil, fmt.Errorf("scan configuration result: %w", err)
		}
		c.N, c.CVFlag, c.Estimated = int(n), flag == 1, est == 1
		c.HalfWidth = (c.CIHigh - c.CILow) / 2
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read configuration results of %s: %w", experimentID, err)
	}
	return out, nil
}

func u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
