package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// RunMetric is one point of a run's time series, identified by
// (ExperimentID, RunID, Name, Labels, TsMs): a point recorded twice (a
// redelivered message) collapses into one, as for Sample.
type RunMetric struct {
	ExperimentID string
	RunID        string
	TsMs         int64
	Name         string
	Labels       string
	Value        float64
}

// InsertRunMetrics writes run metric points in one batch; idempotent by
// the point's key (see RunMetric).
func (s *Store) InsertRunMetrics(ctx context.Context, points []RunMetric) error {
	return insertRows(ctx, s.conn, fmt.Sprintf("insert %d run metrics", len(points)),
		"INSERT INTO run_metrics (experiment_id, run_id, ts_ms, name, labels, value)", len(points), func(i int) []any {
			p := points[i]
			return []any{p.ExperimentID, p.RunID, p.TsMs, p.Name, p.Labels, p.Value}
		})
}

// Point is one (time, value) of a run metric series.
type Point struct {
	TsMs  int64
	Value float64
}

// RunMetricSeries reads a run metric's series, one per label set, between
// fromMs and toMs inclusive, sorted by time with one point per timestamp
// (the largest value when a point was recorded twice: cumulative series
// only grow).
func (s *Store) RunMetricSeries(ctx context.Context, experimentID, runID, name string, fromMs, toMs int64) (map[string][]Point, error) {
	out := map[string][]Point{}
	err := query(ctx, s.conn, fmt.Sprintf("read run metric %s of run %s", name, runID), `SELECT labels, ts_ms, max(value) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? AND name = ? AND ts_ms >= ? AND ts_ms <= ?
		GROUP BY labels, ts_ms ORDER BY labels, ts_ms`, []any{experimentID, runID, name, fromMs, toMs}, func(rows driver.Rows) error {
		var l string
		var p Point
		if err := rows.Scan(&l, &p.TsMs, &p.Value); err != nil {
			return err
		}
		out[l] = append(out[l], p)
		return nil
	})
	return out, err
}

// SeriesEnd is where one series of a run metric has got to.
type SeriesEnd struct {
	Name, Labels string
	LatestMs     int64   // its latest point
	Last         float64 // the value there
}

// RunMetricEnds returns the latest point of every series (name and label
// set) of the named run metrics of a run.
func (s *Store) RunMetricEnds(ctx context.Context, experimentID, runID string, names ...string) ([]SeriesEnd, error) {
	if len(names) == 0 {
		return nil, nil
	}
	return queryAll(ctx, s.conn, fmt.Sprintf("read the ends of run metrics %v of run %s", names, runID),
		`SELECT name, labels, max(ts_ms), argMax(value, ts_ms) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? AND name IN ? GROUP BY name, labels ORDER BY name, labels`,
		[]any{experimentID, runID, set(names)}, func(rows driver.Rows, e *SeriesEnd) error {
			return rows.Scan(&e.Name, &e.Labels, &e.LatestMs, &e.Last)
		})
}
