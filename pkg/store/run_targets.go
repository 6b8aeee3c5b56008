package store

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// RunTarget is a measurement target of an analysed run with its role, as
// the analyzer recorded it (table run_targets), so that exports and
// reports can attribute sample series to roles after the fact.
type RunTarget struct {
	ExperimentID, RunID string
	TargetID, Kind      string
	Node, Role          string
}

// ReplaceRunTargets stores the targets of one analysis of a run; readers
// take the newest analysis of each run.
func (s *Store) ReplaceRunTargets(ctx context.Context, targets []RunTarget) error {
	return replaceRunRows(ctx, s.conn, "insert run targets", "INSERT INTO run_targets (experiment_id, run_id, target_id, kind, node, role, analyzed_ms)",
		targets, RunTarget.run, func(t RunTarget, v uint64) []any {
			return []any{t.ExperimentID, t.RunID, t.TargetID, t.Kind, t.Node, t.Role, v}
		})
}

func (t RunTarget) run() string { return t.RunID }

// RunTargets returns the targets of the newest analysis of every run of an
// experiment, ordered by run and target.
func (s *Store) RunTargets(ctx context.Context, experimentID string) ([]RunTarget, error) {
	return queryAll(ctx, s.conn, "read targets of "+experimentID, `
		SELECT run_id, target_id, kind, node, role FROM run_targets FINAL
		WHERE experiment_id = ? AND (run_id, analyzed_ms) IN (
		  SELECT run_id, max(analyzed_ms) FROM run_targets WHERE experiment_id = ? GROUP BY run_id)
		ORDER BY run_id, target_id`, []any{experimentID, experimentID}, func(rows driver.Rows, t *RunTarget) error {
		t.ExperimentID = experimentID
		return rows.Scan(&t.RunID, &t.TargetID, &t.Kind, &t.Node, &t.Role)
	})
}
