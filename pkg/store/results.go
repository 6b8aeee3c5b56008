package store

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/greenflow/greenflow/pkg/results"
)

// Result is one metric of one run's results (pkg/results declares the
// metrics, their units and scopes).
type Result struct {
	ExperimentID string
	RunID        string
	Scope        string // results.Scope*
	Subject      string // node name, zone, target id, role; "" for scopes run and experiment
	Metric       string
	Value        float64
	Unit         string
	Estimated    bool
}

// ReplaceResults replaces all result rows of a run: rows are written with a
// newer version, and readers take only the newest analysis of each run, so
// rows of a previous analysis that the new one no longer produces are gone
// too and re-analysis is idempotent.
func (s *Store) ReplaceResults(ctx context.Context, experimentID, runID string, rows []Result) error {
	return replaceAnalysis(ctx, s.conn, "insert results of run "+runID,
		"INSERT INTO results (experiment_id, run_id, scope, subject, metric, value, unit, estimated, analyzed_ms)", rows, func(r Result, v uint64) []any {
			return []any{experimentID, runID, r.Scope, r.Subject, r.Metric, r.Value, r.Unit, b2u(r.Estimated), v}
		})
}

// Results returns the latest results of an experiment (all runs), ordered by
// run, scope, subject and metric. Only the newest analysis of each run
// counts.
func (s *Store) Results(ctx context.Context, experimentID string) ([]Result, error) {
	return queryAll(ctx, s.conn, "read results of "+experimentID, `
		SELECT r.run_id, r.scope, r.subject, r.metric, r.value, r.unit, r.estimated
		FROM results AS r FINAL
		ANY INNER JOIN (
			SELECT run_id, max(analyzed_ms) AS analyzed_ms FROM results WHERE experiment_id = ? GROUP BY run_id
		) AS latest USING (run_id, analyzed_ms)
		WHERE r.experiment_id = ?
		ORDER BY r.run_id, r.scope, r.subject, r.metric`, []any{experimentID, experimentID}, func(rows driver.Rows, r *Result) error {
		r.ExperimentID = experimentID
		var est uint8
		if err := rows.Scan(&r.RunID, &r.Scope, &r.Subject, &r.Metric, &r.Value, &r.Unit, &est); err != nil {
			return err
		}
		r.Estimated = est == 1
		return nil
	})
}

// RunScopeResults returns the run-scope rows of the newest analysis of
// each of the given runs, ordered by run and metric.
func (s *Store) RunScopeResults(ctx context.Context, experimentID string, runIDs []string) ([]Result, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	return queryAll(ctx, s.conn, "read run results of "+experimentID, `
		SELECT run_id, metric, unit, value, estimated FROM results FINAL
		WHERE experiment_id = ? AND scope = ? AND run_id IN ?
		  AND (run_id, analyzed_ms) IN (
		    SELECT run_id, max(analyzed_ms) FROM results WHERE experiment_id = ? AND run_id IN ? GROUP BY run_id)
		ORDER BY run_id, metric`, []any{experimentID, results.ScopeRun, set(runIDs), experimentID, set(runIDs)}, func(rows driver.Rows, r *Result) error {
		r.ExperimentID, r.Scope = experimentID, results.ScopeRun
		var est uint8
		if err := rows.Scan(&r.RunID, &r.Metric, &r.Unit, &r.Value, &est); err != nil {
			return err
		}
		r.Estimated = est == 1
		return nil
	})
}
