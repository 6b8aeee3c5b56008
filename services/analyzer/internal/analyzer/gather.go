package analyzer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
)

// Run metric names the analyzer reads (written by the load generator, the
// Kafka signal sampler and the collectors; the recorder stores the load's
// progress).
const (
	// MetricRecordsSent holds the generator's cumulative acknowledged records.
	MetricRecordsSent = "load_records_sent"
	// MetricInputHighWatermark is the input topic's high-water mark summed
	// over partitions (records ever appended), sampled by the load
	// generator (pkg/kafkasignals).
	MetricInputHighWatermark = "kafka_input_high_watermark"
	// MetricConsumerLag is the SUT consumer group's lag in messages (one
	// series per label set, e.g. per partition; they are summed).
	MetricConsumerLag = "kafka_consumer_lag"
	// MetricCollectorCPU is a collector's cumulative CPU seconds.
	MetricCollectorCPU = "collector_cpu_seconds"
	// metricLoadErrors and metricLoadRate are recorded from load.progress
	// beside MetricRecordsSent.
	metricLoadErrors = "load_errors"
	metricLoadRate   = "load_rate_per_sec"
)

// Inputs is everything one run's analysis is computed from: gather reads
// it from the store, Compute turns it into results without any I/O.
type Inputs struct {
	Run *events.RunMeasured
	// Window holds the figures of every series on the run's nodes around
	// the measurement window, Baseline around the baseline phase (none
	// without one).
	Window, Baseline []store.SeriesWindow
	// WindowBySource and BaselineBySource are the same with a series per
	// source, read only when some series has several (separateMeters).
	WindowBySource, BaselineBySource []store.SeriesWindow
	// RolePeaks is each role's peak power in the window.
	RolePeaks map[string]float64
	// Pending is what the window's data still lacked when it was read.
	Pending Pending
	// The load's cumulative series, per label set: the input topic's
	// high-water marks within EdgeMargin of the window, and the generators'
	// acknowledged records.
	HighWatermark, RecordsSent map[string][]store.Point
	// ConsumerLag from the lag fit's start (lagFitFromMs) to the window
	// end; CollectorCPU the collectors' cumulative CPU seconds.
	ConsumerLag, CollectorCPU map[string][]store.Point
	// LagSLO is the lag-trend objective of the run's spec (zero: the
	// analyzer's, Config.LagSLO).
	LagSLO LagSLO
	// SampledTargets are those of the run's targets with no series around
	// the window that had samples during the run (they stopped).
	SampledTargets []string
	// Workload is the run's workload, nil when its configuration is not
	// stored or unreadable (only the per-MB figures need it).
	Workload *spec.Workload
	// NowMs is when the analysis ran.
	NowMs int64
	// Gaps are the collectors' recorded gaps touching the window (gaps.go).
	Gaps []store.Gap
	// Meters are the meter configurations the collectors recorded for the
	// run's experiment (meterfallback.go reads the run's).
	Meters []store.RunMeter
	// LoadRate is the window's per-second load check (loadtruth.go).
	LoadRate kafkasignals.Deviation
}

// checkWindow rejects a run.measured no analysis can be made of.
func checkWindow(m *events.RunMeasured) error {
	if m.MeasureEndMs <= m.MeasureStartMs {
		return bus.Permanent(fmt.Errorf("run %s: measurement window [%d, %d] is empty", m.RunID, m.MeasureStartMs, m.MeasureEndMs))
	}
	if len(m.Targets) == 0 {
		return bus.Permanent(fmt.Errorf("run %s has no measurement targets", m.RunID))
	}
	return nil
}

// gather reads the inputs of a run's analysis; pending is what its data
// lacked when the caller last looked (dataPending), so it is read once per
// delivery.
func (a *Analyzer) gather(ctx context.Context, m *events.RunMeasured, pending Pending) (Inputs, error) {
	in := Inputs{Run: m, NowMs: a.clock.Now().UnixMilli(), Pending: pending}
	nodes, margin := runNodes(m), a.cfg.EdgeMargin.Milliseconds()
	var err error
	if in.Window, err = a.store.SeriesInWindow(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs, margin); err != nil {
		return in, err
	}
	if hasMixedSources(in.Window) {
		if in.WindowBySource, err = a.store.SeriesBySourceInWindow(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs, margin); err != nil {
			return in, err
		}
	}
	if m.BaselineEnd > m.BaselineStart {
		if in.Baseline, err = a.store.SeriesInWindow(ctx, nodes, m.BaselineStart, m.BaselineEnd, margin); err != nil {
			return in, err
		}
		if hasMixedSources(in.Baseline) {
			if in.BaselineBySource, err = a.store.SeriesBySourceInWindow(ctx, nodes, m.BaselineStart, m.BaselineEnd, margin); err != nil {
				return in, err
			}
		}
	}
	if in.RolePeaks, err = a.store.RolePeakPower(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs, roleOf(m)); err != nil {
		return in, err
	}
	if in.HighWatermark, err = a.store.RunMetricSeries(ctx, m.ExperimentID, m.RunID, MetricInputHighWatermark, m.MeasureStartMs-margin,
		m.MeasureEndMs+margin); err != nil {
		return in, err
	}
	if in.RecordsSent, err = a.store.RunMetricSeries(ctx, m.ExperimentID, m.RunID, MetricRecordsSent, 0, 1<<62); err != nil {
		return in, err
	}
	in.LagSLO = a.lagSLO(ctx, m)
	if in.ConsumerLag, err = a.store.RunMetricSeries(ctx, m.ExperimentID, m.RunID, MetricConsumerLag, lagFitFromMs(m, in.LagSLO),
		m.MeasureEndMs); err != nil {
		return in, err
	}
	if in.CollectorCPU, err = a.store.RunMetricSeries(ctx, m.ExperimentID, m.RunID, MetricCollectorCPU, 0, 1<<62); err != nil {
		return in, err
	}
	if missing := missingTargets(m, in.Window); len(missing) > 0 {
		if in.SampledTargets, err = a.store.TargetsSampled(ctx, nodes, missing, runStart(m), m.MeasureEndMs+margin); err != nil {
			return in, err
		}
	}
	if in.LoadRate, err = a.loadRate(ctx, m); err != nil {
		return in, err
	}
	in.Workload = a.workload(ctx, m)
	if in.Gaps, err = a.store.GapsOverlapping(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs); err != nil {
		return in, err
	}
	if in.Meters, err = a.store.RunMeters(ctx, m.ExperimentID, m.RunID); err != nil {
		return in, err
	}
	return in, nil
}

// workload reads the run's workload from its stored configuration; an
// unreadable one only costs the per-MB figures.
func (a *Analyzer) workload(ctx context.Context, m *events.RunMeasured) *spec.Workload {
	cfg, err := a.store.RunConfig(ctx, m.ExperimentID, m.RunID)
	if err != nil || cfg == "" {
		if err != nil {
			a.logger.Warn("run config not read", zap.String("run_id", m.RunID), zap.Error(err))
		}
		return nil
	}
	var rc spec.RunConfig
	if err := json.Unmarshal([]byte(cfg), &rc); err != nil {
		a.logger.Warn("run config unreadable", zap.String("run_id", m.RunID), zap.Error(err))
		return nil
	}
	return &rc.Workload
}

// lagSLO is the run's lag-trend objective from its experiment's stored
// spec; without one (an experiment record not written, an older record),
// the analyzer's flags.
func (a *Analyzer) lagSLO(ctx context.Context, m *events.RunMeasured) LagSLO {
	def := a.cfg.LagSLO()
	e, err := a.store.GetExperiment(ctx, m.ExperimentID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			a.logger.Warn("experiment spec not read; lag SLO from the analyzer's flags", zap.String("run_id", m.RunID), zap.Error(err))
		}
		return def
	}
	slo, err := lagSLOOf(e.Spec, def)
	if err != nil {
		a.logger.Warn("experiment spec unreadable; lag SLO from the analyzer's flags", zap.String("run_id", m.RunID), zap.Error(err))
	}
	return slo
}

// missingTargets lists the run's targets (not nodes) without a series of
// their own around the window, sorted.
func missingTargets(m *events.RunMeasured, window []store.SeriesWindow) []string {
	have := map[string]bool{}
	for _, s := range window {
		if isTargetScope(s.Scope) {
			have[s.TargetID] = true
		}
	}
	return targetsWithout(m, have)
}

// targetsWithout lists the run's targets (not nodes) not in have, sorted.
func targetsWithout(m *events.RunMeasured, have map[string]bool) []string {
	var out []string
	for _, t := range m.Targets {
		if t.Kind != "node" && !have[t.ID] {
			out = append(out, t.ID)
		}
	}
	sort.Strings(out)
	return out
}

// runStart is the earliest recorded instant of the run: its first phase,
// its baseline or its measurement window.
func runStart(m *events.RunMeasured) int64 {
	from := m.MeasureStartMs
	for _, p := range m.Phases {
		if p.StartMs > 0 && p.StartMs < from {
			from = p.StartMs
		}
	}
	if m.BaselineStart > 0 && m.BaselineStart < from {
		from = m.BaselineStart
	}
	return from
}

// Pending is what a run's analysis may still be waiting for.
type Pending struct {
	// Nodes without a node-total sample at or past the window end.
	Nodes []string
	// Late are the series (a node's total or a target, per source) with
	// samples in the window whose latest sample is still short of its end:
	// each meter's watermark, so one slow source (a collector that has not
	// flushed its last batch) holds the analysis even when another source
	// on the same node is complete.
	Late []LateSeries
	// Load: no load series reaches past the window end, and the
	// generators' series does not yet add up to load.finished's count.
	Load bool
}

// retired reports whether the meter of w was replaced within the window: a
// source of the same node total or target began after w's last sample and
// reaches endMs (the collector fell back from one meter to another). Its
// samples will not grow any more, so waiting for them would only delay the
// analysis and flag it late.
func retired(w store.SeriesWatermark, marks []store.SeriesWatermark, endMs int64) bool {
	for _, o := range marks {
		if o.Node == w.Node && o.Scope == w.Scope && o.TargetID == w.TargetID && o.Source != w.Source && o.FirstMs > w.LatestMs &&
			o.LatestMs >= endMs {
			return true
		}
	}
	return false
}

// LateSeries is one series whose durable samples stop short of the window
// end.
type LateSeries struct {
	Kind   string // "node" or "target"
	Name   string // node name or target id
	Source string
	// ShortMs is how far its latest sample is from the window end.
	ShortMs int64
}

func (p Pending) late() bool { return len(p.Nodes) > 0 || len(p.Late) > 0 || p.Load }

func (p Pending) String() string {
	var parts []string
	if len(p.Nodes) > 0 {
		parts = append(parts, "energy samples of nodes "+strings.Join(p.Nodes, ", "))
	}
	for _, l := range p.Late {
		parts = append(parts, fmt.Sprintf("the last %.1f s of %s %s's %s samples", float64(l.ShortMs)/1000, l.Kind, l.Name, l.Source))
	}
	if p.Load {
		parts = append(parts, "the load's series ("+MetricInputHighWatermark+" or "+MetricRecordsSent+")")
	}
	return strings.Join(parts, " and ")
}

// dataPending reads every source's watermark on the run's nodes and
// targets, and the ends of the load's series: until every node has a
// sample past the window end, every series with samples in the window
// reaches its end and a load series does, the window's last stretch is not
// stored yet (collectors flush in batches; load progress is recorded from
// the bus).
func (a *Analyzer) dataPending(ctx context.Context, m *events.RunMeasured) (Pending, error) {
	ids := make([]string, len(m.Targets))
	for i, t := range m.Targets {
		ids[i] = t.ID
	}
	marks, err := a.store.SampleWatermarks(ctx, runNodes(m), ids, m.MeasureStartMs)
	if err != nil {
		return Pending{}, err
	}
	var ends []store.SeriesEnd
	if m.OfferedRate > 0 {
		if ends, err = a.store.RunMetricEnds(ctx, m.ExperimentID, m.RunID, MetricInputHighWatermark, MetricRecordsSent); err != nil {
			return Pending{}, err
		}
	}
	return pendingOf(m, marks, ends), nil
}

// pendingOf says what is pending from the series' watermarks and the ends
// of the load's series. The load's data is complete when a series reaches
// past the window end, or when the generators' series adds up to the count
// load.finished reported (a load stopped or ended early: its final progress
// reports are the last points there will be).
func pendingOf(m *events.RunMeasured, marks []store.SeriesWatermark, ends []store.SeriesEnd) Pending {
	var p Pending
	have := map[string]bool{}
	for _, w := range marks {
		kind, name := "target", w.TargetID
		if w.Scope == "node" {
			kind, name = "node", w.Node
			have[w.Node] = true
		}
		if w.LatestMs >= m.MeasureEndMs || retired(w, marks, m.MeasureEndMs) {
			continue
		}
		p.Late = append(p.Late, LateSeries{Kind: kind, Name: name, Source: w.Source, ShortMs: m.MeasureEndMs - w.LatestMs})
	}
	for _, n := range runNodes(m) {
		if !have[n] {
			p.Nodes = append(p.Nodes, n)
		}
	}
	if m.OfferedRate <= 0 {
		return p
	}
	complete, acked := false, 0.0
	for _, e := range ends {
		complete = complete || e.LatestMs >= m.MeasureEndMs
		if e.Name == MetricRecordsSent {
			acked += e.Last
		}
	}
	p.Load = !complete && !(m.RecordsSent > 0 && acked >= float64(m.RecordsSent))
	return p
}
