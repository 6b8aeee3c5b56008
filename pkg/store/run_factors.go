package store

import (
	"context"
	"math"
	"strconv"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// RunFactor is one factor of an analysed run (table run_factors), so a
// dashboard filters and groups runs by a factor without parsing JSON.
type RunFactor struct {
	ExperimentID, RunID string
	ConfigHash          string
	Factor, Value       string
}

// ReplaceRunFactors stores the factors of one analysis of a run; the value
// is stored as a number too (NaN when it is not one).
func (s *Store) ReplaceRunFactors(ctx context.Context, factors []RunFactor) error {
	return replaceRunRows(ctx, s.conn, "insert run factors", `INSERT INTO run_factors (experiment_id, run_id, config_hash, factor, value, value_num, analyzed_ms)`,
		factors, RunFactor.run, func(f RunFactor, v uint64) []any {
			num, err := strconv.ParseFloat(f.Value, 64)
			if err != nil {
				num = math.NaN()
			}
			return []any{f.ExperimentID, f.RunID, f.ConfigHash, f.Factor, f.Value, num, v}
		})
}

func (f RunFactor) run() string { return f.RunID }

// RunFactors returns the factors of every run of an experiment, by run and
// factor.
func (s *Store) RunFactors(ctx context.Context, experimentID string) ([]RunFactor, error) {
	return queryAll(ctx, s.conn, "read run factors of "+experimentID, `
		SELECT run_id, config_hash, factor, value FROM run_factors FINAL
		WHERE experiment_id = ? ORDER BY run_id, factor`, []any{experimentID}, func(rows driver.Rows, f *RunFactor) error {
		f.ExperimentID = experimentID
		return rows.Scan(&f.RunID, &f.ConfigHash, &f.Factor, &f.Value)
	})
}
