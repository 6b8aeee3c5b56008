// Package analyzer turns a measured run into results and keeps the
// per-configuration statistics across repetitions up to date.
//
// Per run, over the recorded measurement window (the scheduler's phase
// timestamps, not the nominal duration): energy, mean and peak power per
// node, per measurement zone, per target (process or pod) and per role (sut,
// broker, loadgen, platform, other = processes measured on the run's nodes
// that are not its targets, unattributed = the node's idle/system rest);
// dynamic energy above the run's own baseline phase; events (from the load
// generator's progress series), throughput, energy per event and per MB,
// events per joule; Theodolite's lag-trend SLO; the collectors' CPU overhead;
// and data-quality flags. Per-series sums, gap detection and the trapezoid
// integration run in ClickHouse; Go only combines the per-series rows.
//
// # Integration and gap policy
//
// A series is one (node, scope, target, zone) stream of samples. Each sample
// at ts carries the energy of the interval (ts - interval, ts].
//
//   - Counter-backed series (the collector writes per-interval delta_j, wraps
//     already resolved): energy is the sum of the deltas, a sample straddling
//     a window edge counting in proportion to its overlap with the window.
//   - Power-only series (every delta_j is 0 and some power_w is not, e.g. a
//     gauge exporter): power is integrated by the trapezoid rule between
//     consecutive samples, interpolated linearly at the window edges.
//   - A gap is a pair of consecutive samples further apart than twice the
//     later sample's interval. Its uncovered stretch — (earlier ts, later ts
//   - interval] for counters, the whole segment for gauges — is bridged
//     with the mean of the two samples' powers (the trapezoid rule), so a
//     lost batch of samples does not silently lower the energy. Every gap is
//     counted (quality_sample_gaps), and its length and bridged energy are
//     reported (quality_gap_s, quality_bridged_energy_j). Shorter stretches
//     are timestamp rounding and are ignored.
//   - Nothing is extrapolated beyond the first or last sample: window time
//     without a sample interval or bridged gap is reported as
//     quality_uncovered_s (it includes millisecond rounding).
//   - A drop of a series' cumulative energy_j means the collector restarted
//     (quality_counter_resets); deltas stay valid across it.
//   - quality_estimated_source is 1 when a node's numbers come from the
//     utilisation model instead of a hardware counter (the run row counts
//     such nodes), quality_mixed_sources when a node's series changed meter
//     within the window, integrated_from_power when it had only power, and
//     quality_attribution_residual_j is node energy minus the sum of its
//     parts (targets, other processes, unattributed), 0 when attribution
//     conserves energy.
//
// Bytes per event: no byte counter is recorded, so data volume is events ×
// the mean size of a UC-3 record as the load generator encodes it (key plus
// value, Confluent Avro or JSON, averaged over the run's sensor ids), computed
// from the run's workload config and labelled by data_mb_from_workload = 1.
// MB is 10^6 bytes.
//
// Lag trend (Theodolite's SLO): the run metric kafka_consumer_lag, summed over
// its label sets, is sampled every LagStep (latest value at or before each
// instant) from the window start plus LagWarmup — the measurement window
// already starts after the recorded warm-up phase — to its end; the
// least-squares slope in messages/s is compared with LagThreshold. Without
// the series, or with fewer than LagMinPoints samples, no slope and no
// verdict are reported.
package analyzer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// Config configures the analysis.
type Config struct {
	// LagThreshold is the largest lag-trend slope (messages/s) a run may
	// show and still meet the SLO (Theodolite's default: 2000).
	LagThreshold float64 `yaml:"lagThreshold"`
	// LagStep is the sampling step of the lag series (Theodolite: 5 s).
	LagStep time.Duration `yaml:"lagStep"`
	// LagWarmup is dropped from the start of the measurement window before
	// fitting, on top of the run's own warm-up phase.
	LagWarmup time.Duration `yaml:"lagWarmup"`
	// LagMinPoints is the fewest lag samples that give a verdict.
	LagMinPoints int `yaml:"lagMinPoints"`
	// CVThreshold flags configurations whose repetitions vary more than
	// this coefficient of variation (0.10 = 10 %).
	CVThreshold float64 `yaml:"cvThreshold"`
	// ConfidenceLevel of the per-configuration intervals (0.95).
	ConfidenceLevel float64 `yaml:"confidenceLevel"`
	// EdgeMargin is how far outside a window samples are read, to find the
	// neighbours of the first and last sample (gaps, interpolation). It must
	// exceed the longest sampling interval; a gap reaching further than this
	// past a window edge goes unbridged and shows as quality_uncovered_s.
	EdgeMargin time.Duration `yaml:"edgeMargin"`
}

// Default returns Theodolite's SLO defaults, a 10 % CV flag and 95 %
// intervals.
func Default() Config {
	return Config{LagThreshold: 2000, LagStep: 5 * time.Second, LagMinPoints: 3, CVThreshold: 0.10, ConfidenceLevel: 0.95,
		EdgeMargin: time.Minute}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.LagThreshold <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.lagThreshold: got %g, expected > 0", c.LagThreshold))
	}
	if c.LagStep < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("analyzer.lagStep: got %s, expected at least 100ms", c.LagStep))
	}
	if c.LagWarmup < 0 {
		errs = append(errs, fmt.Errorf("analyzer.lagWarmup: got %s, expected >= 0", c.LagWarmup))
	}
	if c.LagMinPoints < 2 {
		errs = append(errs, fmt.Errorf("analyzer.lagMinPoints: got %d, expected at least 2", c.LagMinPoints))
	}
	if c.CVThreshold <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.cvThreshold: got %g, expected > 0", c.CVThreshold))
	}
	if c.ConfidenceLevel <= 0 || c.ConfidenceLevel >= 1 {
		errs = append(errs, fmt.Errorf("analyzer.confidenceLevel: got %g, expected between 0 and 1", c.ConfidenceLevel))
	}
	if c.EdgeMargin < 0 {
		errs = append(errs, fmt.Errorf("analyzer.edgeMargin: got %s, expected >= 0", c.EdgeMargin))
	}
	return errors.Join(errs...)
}

// Analyzer is the analyzer service.
type Analyzer struct {
	cfg    Config
	bus    *bus.Bus
	store  *store.Store
	logger *zap.Logger

	analyzed prometheus.Counter
	duration prometheus.Histogram

	verMu   sync.Mutex
	lastVer uint64
}

// New builds the analyzer; no I/O.
func New(cfg Config, b *bus.Bus, st *store.Store, logger *zap.Logger, reg prometheus.Registerer) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Analyzer{cfg: cfg, bus: b, store: st, logger: logger.With(zap.String("component", "analyzer")),
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

// Run metric names the analyzer reads.
const (
	// MetricRecordsSent holds the generator's cumulative acknowledged records.
	MetricRecordsSent = "load_records_sent"
	// MetricConsumerLag is the SUT consumer group's lag in messages (one
	// series per label set, e.g. per partition; they are summed).
	MetricConsumerLag = "kafka_consumer_lag"
	// MetricCollectorCPU is a collector's cumulative CPU seconds.
	MetricCollectorCPU = "collector_cpu_seconds"
)

func (a *Analyzer) handle(ctx context.Context, d bus.Delivery) error {
	m, ok := d.Msg.(*events.RunMeasured)
	if !ok {
		return bus.Permanent(fmt.Errorf("analyzer does not handle %T", d.Msg))
	}
	if m.MeasureEndMs <= m.MeasureStartMs {
		return bus.Permanent(fmt.Errorf("run %s: measurement window [%d, %d] is empty", m.RunID, m.MeasureStartMs, m.MeasureEndMs))
	}
	start := time.Now()
	summary, err := a.AnalyzeAndStore(ctx, m)
	if err != nil {
		return err
	}
	a.analyzed.Inc()
	a.duration.Observe(time.Since(start).Seconds())
	a.logger.Info("run analyzed", zap.String("experiment_id", m.ExperimentID), zap.String("run_id", m.RunID), zap.Float64("energy_j", summary.EnergyJ),
		zap.Int64("events", summary.Events), zap.Float64("uj_per_event", summary.MicroJPerEvent), zap.Bool("estimated", summary.Estimated))
	return a.bus.Publish(ctx, summary, "analyzed:"+m.RunID)
}

// AnalyzeAndStore analyses a run, replaces its stored results and targets,
// and recomputes the statistics of its configuration. Calling it again for
// the same run gives the same rows.
func (a *Analyzer) AnalyzeAndStore(ctx context.Context, m *events.RunMeasured) (events.RunAnalyzed, error) {
	res, summary, err := a.Analyze(ctx, m)
	if err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.store.ReplaceResults(ctx, m.ExperimentID, m.RunID, res); err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.writeTargets(ctx, m); err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.UpdateConfigSummary(ctx, m.ExperimentID, m.ConfigHash, m.Factors, m.RunID); err != nil {
		return events.RunAnalyzed{}, err
	}
	return summary, nil
}

// version returns strictly increasing ReplacingMergeTree versions (µs).
func (a *Analyzer) version() uint64 {
	a.verMu.Lock()
	defer a.verMu.Unlock()
	v := uint64(time.Now().UnixMicro())
	if v <= a.lastVer {
		v = a.lastVer + 1
	}
	a.lastVer = v
	return v
}

// runNodes returns the sorted distinct nodes of the run's targets.
func runNodes(m *events.RunMeasured) []string {
	set := map[string]bool{}
	for _, t := range m.Targets {
		set[t.Node] = true
	}
	nodes := make([]string, 0, len(set))
	for n := range set {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return nodes
}

// roleOf maps the run's target ids to their roles; a target without a role
// is the system under test, as the provisioners have always meant it.
func roleOf(m *events.RunMeasured) map[string]string {
	out := make(map[string]string, len(m.Targets))
	for _, t := range m.Targets {
		r := t.Role
		if r == "" {
			r = RoleSUT
		}
		out[t.ID] = r
	}
	return out
}

// Roles results are reported for, besides the targets' own.
const (
	RoleSUT          = "sut"
	RoleOther        = "other"
	RoleUnattributed = "unattributed"
)

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
