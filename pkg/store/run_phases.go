package store

import (
	"context"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// PhaseWindow is the phase name of a run's measured window in run_phases
// (the other rows are the scheduler's phases, named by their run state).
const PhaseWindow = "window"

// RunPhase is one phase of an analysed run (table run_phases): what a
// dashboard selects a run's samples by (start and end as DateTime for
// Grafana's time filter) and draws as annotations.
type RunPhase struct {
	ExperimentID, RunID string
	ConfigHash          string
	Repetition          uint32
	Phase               string
	StartMs, EndMs      int64
}

// ReplaceRunPhases stores the phases of one analysis of a run; rows of
// the same (run, phase) written by an earlier analysis are replaced.
func (s *Store) ReplaceRunPhases(ctx context.Context, windows []RunPhase) error {
	return replaceRunRows(ctx, s.conn, "insert run windows", `INSERT INTO run_phases (experiment_id, run_id, config_hash, repetition, phase,
		start_time, end_time, start_ms, end_ms, analyzed_ms)`, windows, RunPhase.run, func(w RunPhase, v uint64) []any {
		return []any{w.ExperimentID, w.RunID, w.ConfigHash, w.Repetition, w.Phase, floorSecond(w.StartMs), ceilSecond(w.EndMs), w.StartMs, w.EndMs, v}
	})
}

func (w RunPhase) run() string { return w.RunID }

// RunPhases returns the phases of every run of an experiment, by run and
// start.
func (s *Store) RunPhases(ctx context.Context, experimentID string) ([]RunPhase, error) {
	return queryAll(ctx, s.conn, "read run windows of "+experimentID, `
		SELECT run_id, config_hash, repetition, phase, start_ms, end_ms FROM run_phases FINAL
		WHERE experiment_id = ? ORDER BY run_id, start_ms, phase`, []any{experimentID}, func(rows driver.Rows, w *RunPhase) error {
		w.ExperimentID = experimentID
		return rows.Scan(&w.RunID, &w.ConfigHash, &w.Repetition, &w.Phase, &w.StartMs, &w.EndMs)
	})
}

// floorSecond and ceilSecond widen a millisecond span to whole seconds, so
// a DateTime filter on [start_time, end_time] keeps every sample of it.
func floorSecond(ms int64) time.Time { return time.Unix(ms/1000, 0).UTC() }

func ceilSecond(ms int64) time.Time { return time.Unix((ms+999)/1000, 0).UTC() }
