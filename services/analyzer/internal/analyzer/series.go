package analyzer

import (
	"context"
	"fmt"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/stats"
)

// point is one (ts_ms, value) of a run metric series.
type point struct {
	ts int64
	v  float64
}

// metricSeries reads a run metric's series (one per label set) between
// fromMs and toMs inclusive, one point per timestamp (the largest value when
// a point was recorded twice: cumulative series only grow).
func (a *Analyzer) metricSeries(ctx context.Context, m *events.RunMeasured, name string, fromMs, toMs int64) (map[string][]point, error) {
	rows, err := a.store.Conn().Query(ctx, `SELECT labels, ts_ms, max(value) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? AND name = ? AND ts_ms >= ? AND ts_ms <= ?
		GROUP BY labels, ts_ms ORDER BY labels, ts_ms`, m.ExperimentID, m.RunID, name, fromMs, toMs)
	if err != nil {
		return nil, fmt.Errorf("query run metric %s: %w", name, err)
	}
	defer rows.Close()
	out := map[string][]point{}
	for rows.Next() {
		var l string
		var p point
		if err := rows.Scan(&l, &p.ts, &p.v); err != nil {
			return nil, fmt.Errorf("scan run metric %s: %w", name, err)
		}
		out[l] = append(out[l], p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read run metric %s: %w", name, err)
	}
	return out, nil
}

// windowDelta is the growth of cumulative series over [m's window], each
// series interpolated at the edges; ok is false without any series.
func (a *Analyzer) windowDelta(ctx context.Context, m *events.RunMeasured, name string) (float64, bool, error) {
	series, err := a.metricSeries(ctx, m, name, 0, 1<<62)
	if err != nil || len(series) == 0 {
		return 0, false, err
	}
	var total float64
	for _, l := range sortedKeys(series) {
		pts := series[l]
		total += interp(pts, m.MeasureEndMs) - interp(pts, m.MeasureStartMs)
	}
	return total, true, nil
}

// interp evaluates a cumulative series at t (0 before the first point, the
// last value after the last).
func interp(pts []point, t int64) float64 {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].ts >= t })
	switch {
	case i == 0:
		if pts[0].ts == t {
			return pts[0].v
		}
		// Before the first report the generator had sent proportionally
		// less; assume it started from zero one second before its first
		// report.
		t0 := pts[0].ts - 1000
		if t <= t0 {
			return 0
		}
		return pts[0].v * float64(t-t0) / 1000
	case i == len(pts):
		return pts[len(pts)-1].v
	}
	a, b := pts[i-1], pts[i]
	return a.v + (b.v-a.v)*float64(t-a.ts)/float64(b.ts-a.ts)
}

// lagTrend is the outcome of Theodolite's lag-trend SLO check.
type lagTrend struct {
	Found   bool // a lag series exists
	Points  int  // sampled instants with a value
	Verdict bool // enough points for a slope and a verdict
	Slope   float64
	OK      bool // Slope < LagThreshold
}

// lagTrendOf samples the summed consumer lag every LagStep over the window
// (after LagWarmup) and fits a least-squares line.
func (a *Analyzer) lagTrendOf(ctx context.Context, m *events.RunMeasured) (lagTrend, error) {
	from := m.MeasureStartMs + a.cfg.LagWarmup.Milliseconds()
	series, err := a.metricSeries(ctx, m, MetricConsumerLag, from-a.cfg.EdgeMargin.Milliseconds(), m.MeasureEndMs)
	if err != nil || len(series) == 0 {
		return lagTrend{}, err
	}
	var xs, ys []float64
	labels := sortedKeys(series)
	step := a.cfg.LagStep.Milliseconds()
	for t := from; t <= m.MeasureEndMs; t += step {
		total, any := 0.0, false
		for _, l := range labels {
			pts := series[l]
			// The latest value at or before t, as an instant query sees it.
			i := sort.Search(len(pts), func(i int) bool { return pts[i].ts > t })
			if i > 0 {
				total += pts[i-1].v
				any = true
			}
		}
		if any {
			xs = append(xs, float64(t-from)/1000)
			ys = append(ys, total)
		}
	}
	lt := lagTrend{Found: true, Points: len(xs)}
	if lt.Points < a.cfg.LagMinPoints {
		return lt, nil
	}
	slope, _, ok := stats.LinearFit(xs, ys)
	if !ok {
		return lt, nil
	}
	lt.Verdict, lt.Slope, lt.OK = true, slope, slope < a.cfg.LagThreshold
	return lt, nil
}

// sortedKeys returns m's keys in order, so float sums over them are
// reproducible.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
