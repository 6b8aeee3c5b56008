package analyzer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
)

// Deps are the analyzer's collaborators.
type Deps struct {
	// Bus carries run.measured and load.progress in and run.analyzed out;
	// without one the analyzer can only Analyze (tests, benchmarks).
	Bus   *bus.Bus
	Store *store.Store
	// Logger defaults to a no-op logger, Registry to none (metrics not
	// exposed), Clock to the real clock.
	Logger   *zap.Logger
	Registry prometheus.Registerer
	Clock    clock.PassiveClock
}

// Analyzer consumes measured runs and stores their results, and records
// the load's progress as run metrics.
type Analyzer struct {
	cfg    Config
	bus    *bus.Bus
	store  *store.Store
	logger *zap.Logger
	clock  clock.PassiveClock

	// The consumers of run.measured and of load.progress.
	analysis, recorder *bus.Consumer

	analyzed prometheus.Counter
	invalid  prometheus.Counter
	duration prometheus.Histogram
	// guard lets only tokens of the right role read results (RegisterHTTP).
	guard *auth.Guard
}

// New builds the analyzer and declares its consumers; no I/O.
func New(cfg Config, d Deps) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil {
		return nil, errors.New("analyzer needs ClickHouse (a store)")
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	a := &Analyzer{cfg: cfg, bus: d.Bus, store: d.Store, logger: d.Logger.With(zap.String("component", "analyzer")), clock: d.Clock,
		analyzed: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_analyzer_runs_analyzed_total", Help: "Runs analyzed."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_analyzer_runs_invalid_total",
			Help: "Runs analysed as invalid (the offered load not delivered, samples missing beyond the bounds)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "greenflow_analyzer_analysis_seconds", Help: "Time to analyze a run.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	a.guard = auth.NewGuard(auth.OnBus(d.Bus, d.Clock), cfg.HTTP, d.Clock, d.Logger) // it names its own component
	if d.Bus != nil {
		a.analysis = d.Bus.NewConsumer(bus.ConsumerAnalyzer, bus.Router("analyzer", bus.On(a.onMeasured)))
		a.recorder = d.Bus.NewConsumer(bus.ConsumerRecorder, bus.Router("recorder", bus.On(a.record)))
	}
	if d.Registry != nil {
		for _, c := range []prometheus.Collector{a.analyzed, a.invalid, a.duration} {
			if err := d.Registry.Register(c); err != nil {
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
	if a.bus == nil {
		return errors.New("analyzer: built without a bus, it can only analyse")
	}
	var g service.Group
	g.Add("run.measured consumer", a.analysis)
	g.Add("load.progress recorder", a.recorder)
	err := g.Run(ctx)
	if err == nil && ctx.Err() == nil {
		err = errors.New("analyzer: a consumer stopped unexpectedly")
	}
	return err
}

// record stores a load.progress as run metrics.
func (a *Analyzer) record(ctx context.Context, m *events.LoadProgress) error {
	labels := `{"instance":"` + m.Instance + `"}`
	point := func(name string, v float64) store.RunMetric {
		return store.RunMetric{ExperimentID: m.ExperimentID, RunID: m.RunID, TsMs: m.TsMs, Name: name, Labels: labels, Value: v}
	}
	return a.store.InsertRunMetrics(ctx, []store.RunMetric{point(MetricRecordsSent, float64(m.RecordsSent)),
		point(metricLoadErrors, float64(m.Errors)), point(metricLoadRate, m.RatePerSec)})
}

// onMeasured analyses a run.measured once its window's data is in.
func (a *Analyzer) onMeasured(ctx context.Context, m *events.RunMeasured) error {
	if err := checkWindow(m); err != nil {
		return err
	}
	// Wait for the window's last samples and load points: the handler
	// fails (the message is Nak'ed and redelivered with the consumer's
	// backoff) until they are stored or SamplesWait has passed since the
	// window end; then the analysis goes ahead and flags samples_late.
	// Waiting this way holds no consumer slot between deliveries.
	pending, err := a.dataPending(ctx, m)
	if err != nil {
		return err
	}
	if pending.late() {
		if a.clock.Now().Before(time.UnixMilli(m.MeasureEndMs).Add(a.cfg.SamplesWait)) {
			return bus.NotYet(fmt.Errorf("run %s: waiting for %s past the window end", m.RunID, pending))
		}
		a.logger.Warn("analysing without the window's last data", zap.String("experiment_id", m.ExperimentID), zap.String("run_id", m.RunID),
			zap.Duration("waited", a.cfg.SamplesWait), zap.String("missing", pending.String()))
	}
	start := a.clock.Now()
	summary, err := a.analyzeAndStore(ctx, m, pending)
	if err != nil {
		return err
	}
	a.analyzed.Inc()
	if summary.Invalid {
		a.invalid.Inc()
	}
	a.duration.Observe(a.clock.Since(start).Seconds())
	a.logger.Info("run analyzed", zap.String("experiment_id", m.ExperimentID), zap.String("run_id", m.RunID), zap.Float64("energy_j", summary.EnergyJ),
		zap.Int64("events", summary.Events), zap.Float64("uj_per_event", summary.MicroJPerEvent), zap.Bool("estimated", summary.Estimated),
		zap.Bool("invalid", summary.Invalid), zap.String("reason", summary.Reason), zap.Strings("flags", summary.Flags))
	return a.bus.Publish(ctx, summary, "analyzed:"+m.RunID)
}

// Analyze computes a run's results without storing them: it gathers the
// inputs from the store and computes (Compute).
func (a *Analyzer) Analyze(ctx context.Context, m *events.RunMeasured) ([]store.Result, events.RunAnalyzed, error) {
	if err := checkWindow(m); err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	pending, err := a.dataPending(ctx, m)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	return a.analyze(ctx, m, pending)
}

// analyze gathers and computes with what the data lacked (pending).
func (a *Analyzer) analyze(ctx context.Context, m *events.RunMeasured, pending Pending) ([]store.Result, events.RunAnalyzed, error) {
	in, err := a.gather(ctx, m, pending)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	rows, summary := Compute(in, a.cfg)
	return rows, summary, nil
}

// AnalyzeAndStore analyses a run, replaces its stored results and targets,
// and recomputes the statistics of its configuration (an invalid run does
// not count in them). Calling it again for the same run gives the same
// rows.
func (a *Analyzer) AnalyzeAndStore(ctx context.Context, m *events.RunMeasured) (events.RunAnalyzed, error) {
	if err := checkWindow(m); err != nil {
		return events.RunAnalyzed{}, err
	}
	pending, err := a.dataPending(ctx, m)
	if err != nil {
		return events.RunAnalyzed{}, err
	}
	return a.analyzeAndStore(ctx, m, pending)
}

// analyzeAndStore is AnalyzeAndStore with what the data lacked (pending).
func (a *Analyzer) analyzeAndStore(ctx context.Context, m *events.RunMeasured, pending Pending) (events.RunAnalyzed, error) {
	rows, summary, err := a.analyze(ctx, m, pending)
	if err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.store.ReplaceResults(ctx, m.ExperimentID, m.RunID, rows); err != nil {
		return events.RunAnalyzed{}, err
	}
	roles := roleOf(m)
	targets := make([]store.RunTarget, len(m.Targets))
	for i, t := range m.Targets {
		targets[i] = store.RunTarget{ExperimentID: m.ExperimentID, RunID: m.RunID, TargetID: t.ID, Kind: t.Kind, Node: t.Node, Role: roles[t.ID]}
	}
	if err := a.store.ReplaceRunTargets(ctx, targets); err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.store.ReplaceRunPhases(ctx, runPhases(m)); err != nil {
		return events.RunAnalyzed{}, err
	}
	if err := a.store.ReplaceRunFactors(ctx, runFactors(m)); err != nil {
		return events.RunAnalyzed{}, err
	}
	include, exclude := m.RunID, ""
	if summary.Invalid {
		include, exclude = "", m.RunID
	}
	if err := a.updateConfigSummary(ctx, m.ExperimentID, m.ConfigHash, m.Factors, include, exclude); err != nil {
		return events.RunAnalyzed{}, err
	}
	return summary, nil
}
