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
// # Verdict
//
// A run keeps the platform's invariant — and may end done — only if its
// measured window had the offered load delivered, complete samples for
// every node and target, and a live system under test throughout. Judge
// decides it from gathered numbers (a pure function); a run that breaks it
// is analysed as invalid (run.analyzed invalid, with the reason), and the
// scheduler fails it. What was recovered or bridged is flagged (run.analyzed
// flags, and run-scope rows flag_<name> = 1).
//
//   - Load: the events of the window are counted at the broker — the
//     kafka_input_high_watermark run metric interpolated at the window edges,
//     when it has samples at most BrokerEdgeSpan apart around both — or else
//     from the generators' cumulative load_records_sent series. Short of
//     offered rate × window by more than LoadTolerance of it plus
//     LoadEdgeSlack's worth of load: invalid; beyond that in surplus (a
//     catch-up after a stall): flag load_surplus. No series at all:
//     invalid, the window's load cannot be checked. The defaults, 2 % +
//     200 ms, come from undisturbed runs on a shared 2-core machine (the
//     README says how): their shortfall is a fixed count — records due
//     just before an edge delivered just after it, up to ~90 ms of load —
//     not a share of the window, so short windows need the slack and long
//     ones are held to about 2 %; a stalled generator, a takeover that
//     missed records or a broker outage costs far more.
//   - Samples: per node total and per target series of the run, a bridged
//     gap longer than max(MaxBridgedGap, MaxBridgedIntervals × the series'
//     sampling interval) — 3 s or 3 intervals by default: a collector
//     hand-over (about 1.4 s) fits, a dead meter does not — or window time
//     no sample covers beyond MaxUncovered (1 s): invalid. A bridged gap
//     within the bound: flag energy_gap_bridged. A node without samples in
//     the window, or a target measured during the run but not in the window
//     (it stopped): invalid. A target the meters never saw at all (e.g. a
//     pod whose containers no meter can attribute): flag target_unmeasured,
//     since its figures are missing, not wrong.
//   - The load generator's account (run.measured, from load.finished):
//     flags load_takeover, load_restart, load_backfilled, load_missed, with
//     the counts as rows (load_takeovers, load_restarts, records_backfilled,
//     records_missed).
//
// Before analysing, the handler checks that every node has a sample at or
// past the window end and a load series reached it (collectors write in
// batches; progress is recorded from the bus); until then it fails and the
// bus redelivers the message with backoff, holding no consumer slot. After
// SamplesWait from the window end it goes ahead with what there is and
// flags samples_late.
//
// Reads de-duplicate: a sample is identified by (node, scope, target_id,
// zone, source, ts_ms) and a run metric point by (name, labels, ts_ms); a
// row written twice counts once whether or not the table merged it yet.
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
	"math"
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

	// The verdict (see Policy and the package comment).
	LoadTolerance       float64       `yaml:"loadTolerance"`
	LoadEdgeSlack       time.Duration `yaml:"loadEdgeSlack"`
	MaxBridgedGap       time.Duration `yaml:"maxBridgedGap"`
	MaxBridgedIntervals int           `yaml:"maxBridgedIntervals"`
	MaxUncovered        time.Duration `yaml:"maxUncovered"`
	// BrokerEdgeSpan is the widest pair of kafka_input_high_watermark
	// samples around a window edge that the events may be interpolated
	// from; wider (or missing), the generators' series is used instead.
	BrokerEdgeSpan time.Duration `yaml:"brokerEdgeSpan"`
	// SamplesWait is how long after the window end the analysis waits for
	// every node's samples (and the load's series) to reach past it; then it
	// goes ahead with what there is and flags samples_late.
	SamplesWait time.Duration `yaml:"samplesWait"`
}

// Policy is the verdict's part of the configuration.
func (c Config) Policy() Policy {
	return Policy{LoadTolerance: c.LoadTolerance, LoadEdgeSlack: c.LoadEdgeSlack, MaxBridgedGap: c.MaxBridgedGap, MaxBridgedIntervals: c.MaxBridgedIntervals,
		MaxUncovered: c.MaxUncovered}
}

// Default returns Theodolite's SLO defaults, a 10 % CV flag and 95 %
// intervals.
func Default() Config {
	return Config{LagThreshold: 2000, LagStep: 5 * time.Second, LagMinPoints: 3, CVThreshold: 0.10, ConfidenceLevel: 0.95,
		EdgeMargin:    time.Minute,
		LoadTolerance: 0.02, LoadEdgeSlack: 200 * time.Millisecond, MaxBridgedGap: 3 * time.Second, MaxBridgedIntervals: 3, MaxUncovered: time.Second,
		BrokerEdgeSpan: 2500 * time.Millisecond, SamplesWait: 10 * time.Second}
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
	if math.IsNaN(c.LoadTolerance) || c.LoadTolerance < 0 || c.LoadTolerance >= 1 {
		errs = append(errs, fmt.Errorf("analyzer.loadTolerance: got %g, expected a fraction in [0, 1)", c.LoadTolerance))
	}
	if c.LoadEdgeSlack < 0 {
		errs = append(errs, fmt.Errorf("analyzer.loadEdgeSlack: got %s, expected >= 0", c.LoadEdgeSlack))
	}
	if c.MaxBridgedGap < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxBridgedGap: got %s, expected >= 0", c.MaxBridgedGap))
	}
	if c.MaxBridgedIntervals < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxBridgedIntervals: got %d, expected >= 0", c.MaxBridgedIntervals))
	}
	if c.MaxUncovered < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxUncovered: got %s, expected >= 0", c.MaxUncovered))
	}
	if c.BrokerEdgeSpan <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.brokerEdgeSpan: got %s, expected a positive duration", c.BrokerEdgeSpan))
	}
	if c.SamplesWait < 0 {
		errs = append(errs, fmt.Errorf("analyzer.samplesWait: got %s, expected >= 0", c.SamplesWait))
	}
	return errors.Join(errs...)
}

// Analyzer is the analyzer service.
type Analyzer struct {
	cfg    Config
	bus    *bus.Bus
	store  *store.Store
	logger *zap.Logger

	now      func() time.Time
	analyzed prometheus.Counter
	invalid  prometheus.Counter
	duration prometheus.Histogram

	verMu   sync.Mutex
	lastVer uint64
}

// Option adjusts an Analyzer.
type Option func(*Analyzer)

// WithClock makes the analyzer read the time from now (tests).
func WithClock(now func() time.Time) Option { return func(a *Analyzer) { a.now = now } }

// New builds the analyzer; no I/O.
func New(cfg Config, b *bus.Bus, st *store.Store, logger *zap.Logger, reg prometheus.Registerer, opts ...Option) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Analyzer{cfg: cfg, bus: b, store: st, logger: logger.With(zap.String("component", "analyzer")), now: time.Now,
		analyzed: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_analyzer_runs_analyzed_total", Help: "Runs analyzed."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_analyzer_runs_invalid_total",
			Help: "Runs analysed as invalid (the offered load not delivered, samples missing beyond the bounds)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "greenflow_analyzer_analysis_seconds", Help: "Time to analyze a run.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	for _, o := range opts {
		o(a)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.analyzed, a.invalid, a.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register analyzer metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Run consumes measured runs and load progress until ctx ends. When either
// consumer stops — it failed to start, or it ended while ctx is live — the
// other is stopped and Run returns at once with the cause: the service must
// fail, not carry on half-alive.
func (a *Analyzer) Run(ctx context.Context) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- a.bus.Consume(cctx, bus.ConsumerAnalyzer, a.handle) }()
	go func() { errc <- a.bus.Consume(cctx, bus.ConsumerRecorder, a.record) }()
	err := <-errc
	if err == nil && ctx.Err() == nil {
		err = errors.New("analyzer: a consumer stopped unexpectedly")
	}
	cancel()
	<-errc // the other one, drained
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
	// Wait for the window's last samples and load points: the handler
	// fails (the message is Nak'ed and redelivered with the consumer's
	// backoff) until they are stored or SamplesWait has passed since the
	// window end; then the analysis goes ahead and flags samples_late.
	// Waiting this way holds no consumer slot between deliveries.
	if pending, err := a.dataPending(ctx, m, runNodes(m)); err != nil {
		return err
	} else if pending.late() && a.now().Before(time.UnixMilli(m.MeasureEndMs).Add(a.cfg.SamplesWait)) {
		return bus.NotYet(fmt.Errorf("run %s: waiting for %s past the window end", m.RunID, pending))
	}
	start := time.Now()
	summary, err := a.AnalyzeAndStore(ctx, m)
	if err != nil {
		return err
	}
	a.analyzed.Inc()
	if summary.Invalid {
		a.invalid.Inc()
	}
	a.duration.Observe(time.Since(start).Seconds())
	a.logger.Info("run analyzed", zap.String("experiment_id", m.ExperimentID), zap.String("run_id", m.RunID), zap.Float64("energy_j", summary.EnergyJ),
		zap.Int64("events", summary.Events), zap.Float64("uj_per_event", summary.MicroJPerEvent), zap.Bool("estimated", summary.Estimated),
		zap.Bool("invalid", summary.Invalid), zap.String("reason", summary.Reason), zap.Strings("flags", summary.Flags))
	return a.bus.Publish(ctx, summary, "analyzed:"+m.RunID)
}

// AnalyzeAndStore analyses a run, replaces its stored results and targets,
// and recomputes the statistics of its configuration (an invalid run does
// not count in them). Calling it again for the same run gives the same
// rows.
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
	include, exclude := m.RunID, ""
	if summary.Invalid {
		include, exclude = "", m.RunID
	}
	if err := a.UpdateConfigSummary(ctx, m.ExperimentID, m.ConfigHash, m.Factors, include, exclude); err != nil {
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
