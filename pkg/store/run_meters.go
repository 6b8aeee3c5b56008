package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// RunMeter is the effective meter configuration of a run on one node and
// source, as the collector sampling it recorded it (table run_meters): the
// interval the run asked and the one the node was sampled at, the meter,
// and for a model its profile (JSON) and label.
type RunMeter struct {
	ExperimentID, RunID string
	Node, SourceID      string
	TsMs                int64 // when this configuration took effect
	AskedIntervalMs     int64 // 0: the run asked nothing (a v1 assignment)
	IntervalMs          int64
	AskedSource, Meter  string
	Estimated           bool
	Label, Model, Note  string
	Collector           string
}

// InsertRunMeters records effective meter configurations; a row written
// twice collapses.
func (s *Store) InsertRunMeters(ctx context.Context, rows []RunMeter) error {
	return insertRows(ctx, s.conn, fmt.Sprintf("insert %d run meter configurations", len(rows)),
		`INSERT INTO run_meters (experiment_id, run_id, node, source_id, ts_ms, asked_interval_ms, interval_ms, asked_source, meter,
		  estimated, label, model, note, collector)`, len(rows), func(i int) []any {
			r := rows[i]
			return []any{r.ExperimentID, r.RunID, r.Node, r.SourceID, r.TsMs, r.AskedIntervalMs, r.IntervalMs, r.AskedSource, r.Meter,
				b2u(r.Estimated), r.Label, r.Model, r.Note, r.Collector}
		})
}

// RunMeters returns the meter configurations recorded for the runs of an
// experiment — only for runIDs when any are given (the analysis of one run
// reads its own, not the whole experiment's) — ordered by run, node, source
// and time.
func (s *Store) RunMeters(ctx context.Context, experimentID string, runIDs ...string) ([]RunMeter, error) {
	q, args := `
		SELECT run_id, node, source_id, ts_ms, asked_interval_ms, interval_ms, asked_source, meter, estimated, label, model, note, collector
		FROM run_meters FINAL WHERE experiment_id = ?`, []any{experimentID}
	if len(runIDs) > 0 {
		q += " AND run_id IN ?"
		args = append(args, set(runIDs))
	}
	return queryAll(ctx, s.conn, "read run meters of "+experimentID, q+" ORDER BY run_id, node, source_id, ts_ms", args,
		func(rows driver.Rows, r *RunMeter) error {
			r.ExperimentID = experimentID
			var est uint8
			if err := rows.Scan(&r.RunID, &r.Node, &r.SourceID, &r.TsMs, &r.AskedIntervalMs, &r.IntervalMs, &r.AskedSource, &r.Meter,
				&est, &r.Label, &r.Model, &r.Note, &r.Collector); err != nil {
				return err
			}
			r.Estimated = est != 0
			return nil
		})
}
