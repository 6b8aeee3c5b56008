package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Run is the stored record of one run.
type Run struct {
	ExperimentID   string
	RunID          string
	Index          uint32
	Repetition     uint32
	Config         string
	ConfigHash     string
	Factors        string
	State          string
	Reason         string
	Phases         string
	MeasureStartMs int64
	MeasureEndMs   int64
	CreatedMs      int64
	// Version orders writes of the same run (the newest wins); the scheduler
	// passes its state revision so concurrent writers cannot reorder states.
	// 0 uses the insert time.
	Version uint64
}

// UpsertRuns writes (or replaces) run rows in one batch.
func (s *Store) UpsertRuns(ctx context.Context, runs []Run) error {
	return insertRows(ctx, s.conn, fmt.Sprintf("upsert %d runs", len(runs)), `INSERT INTO runs (experiment_id, run_id, idx, repetition, config,
		config_hash, factors, state, reason, phases, measure_start_ms, measure_end_ms, created_ms, updated_ms)`, len(runs), func(i int) []any {
		r := runs[i]
		v := r.Version
		if v == 0 {
			v = nowVersion()
		}
		return []any{r.ExperimentID, r.RunID, r.Index, r.Repetition, r.Config, r.ConfigHash, r.Factors, r.State, r.Reason, r.Phases,
			r.MeasureStartMs, r.MeasureEndMs, r.CreatedMs, v}
	})
}

// Runs returns the latest row of each run of an experiment, by index.
func (s *Store) Runs(ctx context.Context, experimentID string) ([]Run, error) {
	return queryAll(ctx, s.conn, "read runs of "+experimentID, `
		SELECT experiment_id, run_id, idx, repetition, config, config_hash, factors, state, reason, phases,
		       measure_start_ms, measure_end_ms, created_ms
		FROM runs FINAL WHERE experiment_id = ? ORDER BY idx`, []any{experimentID}, func(rows driver.Rows, r *Run) error {
		return rows.Scan(&r.ExperimentID, &r.RunID, &r.Index, &r.Repetition, &r.Config, &r.ConfigHash, &r.Factors,
			&r.State, &r.Reason, &r.Phases, &r.MeasureStartMs, &r.MeasureEndMs, &r.CreatedMs)
	})
}

// RunConfig returns the stored configuration (JSON) of a run, "" when the
// run has no row or no configuration.
func (s *Store) RunConfig(ctx context.Context, experimentID, runID string) (string, error) {
	var cfg string
	err := query(ctx, s.conn, "read config of run "+runID, `SELECT config FROM runs FINAL WHERE experiment_id = ? AND run_id = ?`,
		[]any{experimentID, runID}, func(rows driver.Rows) error { return rows.Scan(&cfg) })
	return cfg, err
}

// ConfigRunIDs lists the runs of one configuration (config hash) of an
// experiment whose latest state is none of exceptStates, by run id.
func (s *Store) ConfigRunIDs(ctx context.Context, experimentID, configHash string, exceptStates []string) ([]string, error) {
	q, args := `SELECT run_id FROM runs FINAL WHERE experiment_id = ? AND config_hash = ?`, []any{experimentID, configHash}
	if len(exceptStates) > 0 {
		q += " AND NOT has(?, state)"
		args = append(args, exceptStates)
	}
	return queryStrings(ctx, s.conn, "read runs of configuration "+configHash, q+" ORDER BY run_id", args...)
}
