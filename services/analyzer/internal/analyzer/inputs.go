package analyzer

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
)

// MetricInputHighWatermark is the input topic's high-water mark summed over
// partitions (records ever appended), sampled by the load generator
// (pkg/kafkasignals).
const MetricInputHighWatermark = "kafka_input_high_watermark"

// pendingData is what a run's analysis may still be waiting for.
type pendingData struct {
	// Nodes without a node-total sample at or past the window end.
	Nodes []string
	// Load: no load series reaches past the window end, and the
	// generators' series does not yet add up to load.finished's count.
	Load bool
}

func (p pendingData) late() bool { return len(p.Nodes) > 0 || p.Load }

func (p pendingData) String() string {
	var parts []string
	if len(p.Nodes) > 0 {
		parts = append(parts, "energy samples of nodes "+strings.Join(p.Nodes, ", "))
	}
	if p.Load {
		parts = append(parts, "the load's series ("+MetricInputHighWatermark+" or "+MetricRecordsSent+")")
	}
	return strings.Join(parts, " and ")
}

// dataPending checks that every node of the run has a sample past the
// window end, and that a load series reached it: until then the window's
// last stretch is not stored yet (collectors flush in batches; load
// progress is recorded from the bus).
func (a *Analyzer) dataPending(ctx context.Context, m *events.RunMeasured, nodes []string) (pendingData, error) {
	var p pendingData
	rows, err := a.store.Conn().Query(ctx, `SELECT DISTINCT node FROM samples WHERE has(?, node) AND scope = 'node' AND ts_ms >= ?`,
		nodes, m.MeasureEndMs)
	if err != nil {
		return p, fmt.Errorf("query samples past the window end of run %s: %w", m.RunID, err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return p, fmt.Errorf("scan node: %w", err)
		}
		have[n] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("read samples past the window end of run %s: %w", m.RunID, err)
	}
	for _, n := range nodes {
		if !have[n] {
			p.Nodes = append(p.Nodes, n)
		}
	}
	if m.OfferedRate <= 0 {
		return p, nil
	}
	// The load's data is complete when a series reaches past the window
	// end, or when the generators' series adds up to the count load.finished
	// reported (a load stopped or ended early: its final progress reports
	// are the last points there will be).
	rows, err = a.store.Conn().Query(ctx, `SELECT name, max(ts_ms), argMax(value, ts_ms) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? AND name IN (?, ?) GROUP BY name, labels`,
		m.ExperimentID, m.RunID, MetricInputHighWatermark, MetricRecordsSent)
	if err != nil {
		return p, fmt.Errorf("query load series of run %s: %w", m.RunID, err)
	}
	complete, acked := false, 0.0
	for rows.Next() {
		var name string
		var latest int64
		var last float64
		if err := rows.Scan(&name, &latest, &last); err != nil {
			rows.Close()
			return p, fmt.Errorf("scan load series: %w", err)
		}
		complete = complete || latest >= m.MeasureEndMs
		if name == MetricRecordsSent {
			acked += last
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("read load series of run %s: %w", m.RunID, err)
	}
	p.Load = !complete && !(m.RecordsSent > 0 && acked >= float64(m.RecordsSent))
	return p, nil
}

// windowEvents is the count of events in the measured window and where it
// comes from.
type windowEvents struct {
	N    float64
	From string
	// Acked is the generators' own count of the window (when their series
	// exists), beside the broker's.
	Acked    float64
	HasAcked bool
	// Total is the whole load's count, shown when no series exists.
	Total int64
}

func (w windowEvents) count() int64 {
	if w.From == EventsUnknown {
		return w.Total
	}
	return int64(math.Round(w.N))
}

// windowEvents counts the events of the window: from the input topic's
// high-water marks when every label set of that series has samples at most
// BrokerEdgeSpan apart around both window edges (interpolated linearly
// there); else from the generators' cumulative acknowledged-records series;
// else unknown.
func (a *Analyzer) windowEvents(ctx context.Context, m *events.RunMeasured) (windowEvents, error) {
	margin := a.cfg.EdgeMargin.Milliseconds()
	hwm, err := a.metricSeries(ctx, m, MetricInputHighWatermark, m.MeasureStartMs-margin, m.MeasureEndMs+margin)
	if err != nil {
		return windowEvents{}, err
	}
	acked, hasAcked, err := a.windowDelta(ctx, m, MetricRecordsSent)
	if err != nil {
		return windowEvents{}, err
	}
	w := windowEvents{Acked: acked, HasAcked: hasAcked, Total: m.RecordsSent}
	switch n, ok := bracketDelta(hwm, m.MeasureStartMs, m.MeasureEndMs, a.cfg.BrokerEdgeSpan.Milliseconds()); {
	case ok:
		w.N, w.From = n, EventsFromBroker
	case hasAcked:
		w.N, w.From = acked, EventsFromGenerator
	default:
		w.From = EventsUnknown
	}
	return w, nil
}

// bracketDelta is the growth of cumulative series between start and end,
// each interpolated between its samples around each edge; ok is false
// without series or when a series lacks samples at most span apart around
// an edge.
func bracketDelta(series map[string][]point, start, end, span int64) (float64, bool) {
	if len(series) == 0 {
		return 0, false
	}
	var total float64
	for _, l := range sortedKeys(series) {
		pts := series[l]
		a, ok1 := bracket(pts, start, span)
		b, ok2 := bracket(pts, end, span)
		if !ok1 || !ok2 {
			return 0, false
		}
		total += b - a
	}
	return total, true
}

// bracket interpolates sorted pts at t from the last point at or before t
// and the first at or after it, when they are at most span apart.
func bracket(pts []point, t, span int64) (float64, bool) {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].ts >= t })
	if i < len(pts) && pts[i].ts == t {
		return pts[i].v, true
	}
	if i == 0 || i == len(pts) {
		return 0, false
	}
	lo, hi := pts[i-1], pts[i]
	if hi.ts-lo.ts > span {
		return 0, false
	}
	return lo.v + (hi.v-lo.v)*float64(t-lo.ts)/float64(hi.ts-lo.ts), true
}

// targetCoverage gathers the verdict's view of the samples: the coverage
// of every node total and of every target series of the run in the
// window, the targets measured during the run but not in the window
// (lost), and those never measured at all (unmeasured: the meter cannot
// see them).
func (a *Analyzer) targetCoverage(ctx context.Context, m *events.RunMeasured, win []seriesEnergy) (series []SeriesQuality, lost, unmeasured []string, err error) {
	inWin := map[string]bool{}
	for _, s := range win {
		switch {
		case s.Scope == "node":
			series = append(series, SeriesQuality{Kind: "node", Name: s.Node, IntervalMs: s.IntervalMs, Gaps: s.Gaps, MaxGapMs: s.MaxGapMs,
				UncoveredMs: s.UncoveredMs})
		case isTargetScope(s.Scope) && isRunTarget(m, s.Target):
			inWin[s.Target] = true
			series = append(series, SeriesQuality{Kind: "target", Name: s.Target, IntervalMs: s.IntervalMs, Gaps: s.Gaps, MaxGapMs: s.MaxGapMs,
				UncoveredMs: s.UncoveredMs})
		}
	}
	var missing []string
	for _, t := range m.Targets {
		if t.Kind != "node" && !inWin[t.ID] {
			missing = append(missing, t.ID)
		}
	}
	if len(missing) == 0 {
		return series, nil, nil, nil
	}
	sort.Strings(missing)
	from := m.MeasureStartMs
	for _, p := range m.Phases {
		if p.StartMs > 0 && p.StartMs < from {
			from = p.StartMs
		}
	}
	if m.BaselineStart > 0 && m.BaselineStart < from {
		from = m.BaselineStart
	}
	rows, err := a.store.Conn().Query(ctx, `SELECT DISTINCT target_id FROM samples
		WHERE has(?, node) AND scope IN ('process', 'pod') AND has(?, target_id) AND ts_ms >= ? AND ts_ms <= ?`,
		runNodes(m), missing, from, m.MeasureEndMs+a.cfg.EdgeMargin.Milliseconds())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("query samples of targets %v of run %s: %w", missing, m.RunID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, nil, nil, fmt.Errorf("scan target: %w", err)
		}
		seen[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("read samples of targets of run %s: %w", m.RunID, err)
	}
	for _, id := range missing {
		if seen[id] {
			lost = append(lost, id)
		} else {
			unmeasured = append(unmeasured, id)
		}
	}
	return series, lost, unmeasured, nil
}

func isRunTarget(m *events.RunMeasured, id string) bool {
	for _, t := range m.Targets {
		if t.ID == id {
			return true
		}
	}
	return false
}
