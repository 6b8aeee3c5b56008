package store

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/greenflow/greenflow/pkg/stats"
)

// ConfigResult is one run-scope metric of one configuration (the analysed
// runs sharing a config hash) summarised over its repetitions (table
// config_results).
type ConfigResult struct {
	ConfigHash string
	Factors    string // JSON object
	Metric     string
	Unit       string
	stats.Summary
	CVFlag    bool // CV above the analyzer's threshold
	Estimated bool
	RunIDs    []string
}

// ReplaceConfigResults stores the statistics of one configuration of an
// experiment; readers take the newest write of each configuration, so rows
// of a metric the new statistics lack are gone too.
func (s *Store) ReplaceConfigResults(ctx context.Context, experimentID, configHash string, rows []ConfigResult) error {
	return replaceAnalysis(ctx, s.conn, "insert statistics of configuration "+configHash, `INSERT INTO config_results (experiment_id, config_hash,
		factors, metric, unit, n, mean, sd, cv, ci_level, ci_low, ci_high, median, min, max, cv_flag, estimated, run_ids, analyzed_ms)`,
		rows, func(r ConfigResult, v uint64) []any {
			return []any{experimentID, configHash, r.Factors, r.Metric, r.Unit, uint32(r.N), r.Mean, r.SD, r.CV, r.Level, r.CILow, r.CIHigh,
				r.Median, r.Min, r.Max, b2u(r.CVFlag), b2u(r.Estimated), r.RunIDs, v}
		})
}

// ConfigResults reads the newest per-configuration statistics of an
// experiment, ordered by configuration and metric.
func (s *Store) ConfigResults(ctx context.Context, experimentID string) ([]ConfigResult, error) {
	return queryAll(ctx, s.conn, "read configuration results of "+experimentID, `
		SELECT config_hash, factors, metric, unit, n, mean, sd, cv, ci_level, ci_low, ci_high, median, min, max, cv_flag, estimated, run_ids
		FROM config_results FINAL
		WHERE experiment_id = ? AND (config_hash, analyzed_ms) IN (
		  SELECT config_hash, max(analyzed_ms) FROM config_results WHERE experiment_id = ? GROUP BY config_hash)
		ORDER BY config_hash, metric`, []any{experimentID, experimentID}, func(rows driver.Rows, c *ConfigResult) error {
		var n uint32
		var flag, est uint8
		if err := rows.Scan(&c.ConfigHash, &c.Factors, &c.Metric, &c.Unit, &n, &c.Mean, &c.SD, &c.CV, &c.Level, &c.CILow, &c.CIHigh, &c.Median,
			&c.Min, &c.Max, &flag, &est, &c.RunIDs); err != nil {
			return err
		}
		c.N, c.CVFlag, c.Estimated = int(n), flag == 1, est == 1
		c.HalfWidth = (c.CIHigh - c.CILow) / 2
		return nil
	})
}
