// Package analyzer turns a measured run into results: energy of the system
// under test, of its nodes and the unattributed rest over the recorded
// measurement window (not the nominal duration), mean and peak power, the
// node's baseline power and the dynamic energy above it, events and energy
// per event. Aggregation runs in ClickHouse. It also records the load
// generator's progress series as run metrics.
package analyzer

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// Analyzer is the analyzer service.
type Analyzer struct {
	bus    *bus.Bus
	store  *store.Store
	logger *zap.Logger

	analyzed prometheus.Counter
	duration prometheus.Histogram
}

// New builds the analyzer; no I/O.
func New(b *bus.Bus, st *store.Store, logger *zap.Logger, reg prometheus.Registerer) (*Analyzer, error) {
	a := &Analyzer{bus: b, store: st, logger: logger.With(zap.String("component", "analyzer")),
		analyzed: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_analyzer_runs_analyzed_total", Help: "Runs analyzed."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "greenflow_analyzer_analysis_seconds", Help: "Time to analyze a run.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.analyzed, a.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register analyzer metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Run consumes measured runs and load progress until ctx ends.
func (a *Analyzer) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- a.bus.Consume(ctx, bus.ConsumerAnalyzer, a.handle) }()
	go func() { errc <- a.bus.Consume(ctx, bus.ConsumerRecorder, a.record) }()
	err := <-errc
	if e2 := <-errc; err == nil {
		err = e2
	}
	return err
}

func (a *Analyzer) record(ctx context.Context, d bus.Delivery) error {
	m, ok := d.Msg.(*events.LoadProgress)
	if !ok {
		return bus.Permanent(fmt.Errorf("recorder does not handle %T", d.Msg))
	}
	labels := `{"instance":"` + m.Instance + `"}`
	return a.store.InsertRunMetrics(ctx, []store.RunMetric{
		{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: m.TsMs, Name: MetricRecordsSent, Labels: labels, Value: float64(m.RecordsSent)},
		{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: m.TsMs, Name: "load_errors", Labels: labels, Value: float64(m.Errors)},
		{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: m.TsMs, Name: "load_rate_per_sec", Labels: labels, Value: m.RatePerSec},
	})
}

// MetricRecordsSent is the run metric holding the generator's cumulative
// acknowledged records.
const MetricRecordsSent = "load_records_sent"

func (a *Analyzer) handle(ctx context.Context, d bus.Delivery) error {
	m, ok := d.Msg.(*events.RunMeasured)
	if !ok {
		return bus.Permanent(fmt.Errorf("analyzer does not handle %T", d.Msg))
	}
	if m.MeasureEndMs <= m.MeasureStartMs {
		return bus.Permanent(fmt.Errorf("run %s: measurement window [%d, %d] is empty", m.RunID, m.MeasureStartMs, m.MeasureEndMs))
	}
	start := time.Now()
	res, summary, err := a.Analyze(ctx, m)
	if err != nil {
		return err
	}
	if err := a.store.ReplaceResults(ctx, m.ExperimentID, m.RunID, res); err != nil {
		return err
	}
	a.analyzed.Inc()
	a.duration.Observe(time.Since(start).Seconds())
	a.logger.Info("run analyzed", zap.String("run_id", m.RunID), zap.Float64("energy_j", summary.EnergyJ), zap.Int64("events", summary.Events),
		zap.Float64("uj_per_event", summary.MicroJPerEvent), zap.Bool("estimated", summary.Estimated))
	return a.bus.Publish(ctx, summary, "analyzed:"+m.RunID)
}

// windowEnergy is one series' energy within a window.
type windowEnergy struct {
	Scope, Target, Node string
	Joules, PeakW       float64
	Samples             uint64
	Estimated           bool
}

// energyIn sums each series' energy within [startMs, endMs] on the given
// nodes; a sample covering (ts-interval, ts] counts in proportion to its
// overlap with the window, so edges are exact to the sample's resolution.
func (a *Analyzer) energyIn(ctx context.Context, nodes []string, startMs, endMs int64) ([]windowEnergy, error) {
	rows, err := a.store.Conn().Query(ctx, `
		SELECT scope, target_id, node,
		       sum(delta_j * (least(ts_ms, ?) - greatest(ts_ms - interval_ms, ?)) / interval_ms) AS joules,
		       max(power_w) AS peak_w, count() AS n, max(estimated) AS est
		FROM samples
		WHERE has(?, node) AND ts_ms > ? AND ts_ms - interval_ms < ? AND interval_ms > 0
		  AND scope IN ('node', 'process', 'pod', 'unattributed')
		GROUP BY scope, target_id, node
		ORDER BY scope, target_id, node`, endMs, startMs, nodes, startMs, endMs)
	if err != nil {
		return nil, fmt.Errorf("query window energy: %w", err)
	}
	defer rows.Close()
	var out []windowEnergy
	for rows.Next() {
		var w windowEnergy
		var est uint8
		if err := rows.Scan(&w.Scope, &w.Target, &w.Node, &w.Joules, &w.PeakW, &w.Samples, &est); err != nil {
			return nil, fmt.Errorf("scan window energy: %w", err)
		}
		w.Estimated = est == 1
		out = append(out, w)
	}
	return out, rows.Err()
}

// eventsIn is the number of records the generators acknowledged within the
// window, interpolating each instance's cumulative series at the edges.
func (a *Analyzer) eventsIn(ctx context.Context, m *events.RunMeasured) (int64, bool, error) {
	rows, err := a.store.Conn().Query(ctx, `SELECT labels, ts_ms, max(value) FROM run_metrics
		WHERE experiment_id = ? AND run_id = ? AND name = ? GROUP BY labels, ts_ms ORDER BY labels, ts_ms`,
		m.ExperimentID, m.RunID, MetricRecordsSent)
	if err != nil {
		return 0, false, fmt.Errorf("query load progress: %w", err)
	}
	defer rows.Close()
	series := map[string][][2]float64{}
	for rows.Next() {
		var l string
		var ts int64
		var v float64
		if err := rows.Scan(&l, &ts, &v); err != nil {
			return 0, false, fmt.Errorf("scan load progress: %w", err)
		}
		series[l] = append(series[l], [2]float64{float64(ts), v})
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if len(series) == 0 {
		return 0, false, nil
	}
	var total float64
	for _, pts := range series {
		total += interp(pts, float64(m.MeasureEndMs)) - interp(pts, float64(m.MeasureStartMs))
	}
	return int64(total + 0.5), true, nil
}

// interp evaluates a cumulative series at t (0 before the first point, the
// last value after the last).
func interp(pts [][2]float64, t float64) float64 {
	i := sort.Search(len(pts), func(i int) bool { return pts[i][0] >= t })
	switch {
	case i == 0:
		if pts[0][0] == t {
			return pts[0][1]
		}
		// Before the first report the generator had sent proportionally
		// less; assume it started from zero at the run's first report
		// minus one second.
		t0 := pts[0][0] - 1000
		if t <= t0 {
			return 0
		}
		return pts[0][1] * (t - t0) / 1000
	case i == len(pts):
		return pts[len(pts)-1][1]
	}
	a, b := pts[i-1], pts[i]
	return a[1] + (b[1]-a[1])*(t-a[0])/(b[0]-a[0])
}

// Analyze computes a run's results without storing them.
func (a *Analyzer) Analyze(ctx context.Context, m *events.RunMeasured) ([]store.Result, events.RunAnalyzed, error) {
	nodeSet := map[string]bool{}
	sut := map[string]bool{}
	for _, t := range m.Targets {
		nodeSet[t.Node] = true
		if t.Role == "sut" || t.Role == "" {
			sut[t.ID] = true
		}
	}
	nodes := make([]string, 0, len(nodeSet))
	for n := range nodeSet {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	if len(nodes) == 0 {
		return nil, events.RunAnalyzed{}, bus.Permanent(fmt.Errorf("run %s has no measurement targets", m.RunID))
	}
	win, err := a.energyIn(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	durS := float64(m.MeasureEndMs-m.MeasureStartMs) / 1000
	var sutJ, nodeJ, unattrJ, peakNodeW float64
	estimated := false
	var res []store.Result
	for _, w := range win {
		estimated = estimated || w.Estimated
		switch w.Scope {
		case "node":
			nodeJ += w.Joules
			peakNodeW = max(peakNodeW, w.PeakW)
			res = append(res, store.Result{Scope: "node", Subject: w.Node, Metric: "energy_j", Value: w.Joules, Unit: "J", Estimated: w.Estimated})
		case "unattributed":
			unattrJ += w.Joules
		default:
			if sut[w.Target] {
				sutJ += w.Joules
			}
			res = append(res, store.Result{Scope: "target", Subject: w.Target, Metric: "energy_j", Value: w.Joules, Unit: "J", Estimated: w.Estimated})
		}
	}
	if nodeJ == 0 {
		return nil, events.RunAnalyzed{}, fmt.Errorf("run %s: no energy samples for nodes %v in window [%d, %d] (is an energy collector running?)",
			m.RunID, nodes, m.MeasureStartMs, m.MeasureEndMs)
	}
	var baseW float64
	if m.BaselineEnd > m.BaselineStart {
		base, err := a.energyIn(ctx, nodes, m.BaselineStart, m.BaselineEnd)
		if err != nil {
			return nil, events.RunAnalyzed{}, err
		}
		var bj float64
		for _, w := range base {
			if w.Scope == "node" {
				bj += w.Joules
			}
		}
		baseW = bj / (float64(m.BaselineEnd-m.BaselineStart) / 1000)
	}
	evts, fromSeries, err := a.eventsIn(ctx, m)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	if !fromSeries {
		evts = m.RecordsSent // no progress series: whole-load count, flagged below
	}
	run := func(metric string, v float64, unit string, est bool) {
		res = append(res, store.Result{Scope: "run", Metric: metric, Value: v, Unit: unit, Estimated: est})
	}
	run("duration_s", durS, "s", false)
	run("sut_energy_j", sutJ, "J", estimated)
	run("node_energy_j", nodeJ, "J", estimated)
	run("unattributed_energy_j", unattrJ, "J", estimated)
	run("sut_mean_power_w", sutJ/durS, "W", estimated)
	run("node_mean_power_w", nodeJ/durS, "W", estimated)
	run("node_peak_power_w", peakNodeW, "W", estimated)
	if baseW > 0 {
		run("baseline_node_power_w", baseW, "W", estimated)
		run("dynamic_node_energy_j", nodeJ-baseW*durS, "J", estimated)
	}
	run("events", float64(evts), "1", false)
	run("records_sent_total", float64(m.RecordsSent), "1", false)
	run("offered_rate_eps", m.OfferedRate, "1/s", false)
	run("throughput_eps", float64(evts)/durS, "1/s", false)
	run("events_from_progress_series", b2f(fromSeries), "bool", false)
	var ujPerEvent float64
	if evts > 0 {
		ujPerEvent = sutJ / float64(evts) * 1e6
		run("sut_uj_per_event", ujPerEvent, "uJ", estimated)
		run("node_uj_per_event", nodeJ/float64(evts)*1e6, "uJ", estimated)
	}
	if sutJ > 0 {
		run("events_per_joule", float64(evts)/sutJ, "1/J", estimated)
	}
	summary := events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, DurationS: durS, EnergyJ: sutJ, NodeEnergyJ: nodeJ,
		MeanPowerW: sutJ / durS, Events: evts, MicroJPerEvent: ujPerEvent, Estimated: estimated, TsMs: time.Now().UnixMilli()}
	return res, summary, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
