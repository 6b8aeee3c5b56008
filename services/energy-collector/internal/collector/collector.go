// Package collector samples energy sources — this machine's RAPL counters or
// utilisation model, Kepler and Scaphandre exporters, Prometheus — at a
// fixed interval and attributes each interval's node energy to the run
// targets on that node (process trees, pods), keeping the unattributed part
// explicit so that parts + unattributed = node total. Samples go to
// ClickHouse in batches bounded by size and time, through a bounded backlog
// while ClickHouse is unreachable (package sink).
//
// Several instances share the exporter sources through JetStream KV: see
// coordinator.go for membership and ownership, claims.go for the hand-over,
// and commit.go for the commit protocol that keeps every interval stored,
// and none twice, whenever an instance dies (rows ride in the commit of the
// checkpoint that follows them, and a commit waits until the previous
// one's rows are durable). Pinned sources commit the same way to a file in
// the spool directory (filecommit.go), so a restarted collector continues
// them exactly. runner.go samples one source; rows.go turns a reading into
// sample rows.
package collector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

// Store is where samples and run metrics go, and the collector's records
// beside them: run meter configurations, gaps, power calibrations.
type Store interface {
	sink.Store
	recordStore
}

var _ Store = (*store.Store)(nil)

// Deps are the collector's collaborators.
type Deps struct {
	Bus      *bus.Bus
	Store    Store // samples and run metrics: ClickHouse
	Logger   *zap.Logger
	Registry prometheus.Registerer // may be nil
	Clock    clock.WithTicker      // nil: the real clock
}

// Collector is one energy-collector instance.
type Collector struct {
	cfg    Config
	bus    *bus.Bus
	kv     jetstream.KeyValue // opened by Init
	logger *zap.Logger
	clock  clock.WithTicker
	writer *sink.Writer
	http   *http.Client
	assign *assignments
	health *healthTracker
	ready  *readiness
	m      metrics
	why    string

	records  *records
	recStore recordStore
	// calibrations are the power-model fits known, by node (calibrate.go).
	calMu        sync.Mutex
	calibrations map[string]energy.Calibration
	// fixed are the profiles each model source's current runs are sampled
	// with (meters.go: a run's model is fixed for the run), by source id;
	// kept here, not in the runner, so a runner started again (a lost
	// lock, a hand-over) keeps them.
	fixed map[string]fixedProfile

	// consumer takes collect.assign and collect.release. The bus keeps it
	// consuming across NATS restarts (declaring the stream and the durable
	// consumer again when the server lost them) and reports it in its Check.
	consumer *bus.Consumer
	// runKeys serialises changes of the run.* keys — the consumer's, and
	// putting back those lost with the bucket — so that a run released
	// meanwhile is never put back.
	runKeys sync.Mutex

	// maxPendingRows bounds the rows one runner holds while its commits
	// are blocked (see runner): MaxBuffered shared among the sources.
	maxPendingRows int

	pinned []SourceConfig
	shared map[string]SourceConfig
	opened map[string]energy.Source // sources opened by New
}

var (
	_ service.Component   = (*Collector)(nil)
	_ service.Initializer = (*Collector)(nil)
	_ service.Checker     = (*Collector)(nil)
)

// Metric names.
const (
	MetricCounterResets   = "greenflow_energy_collector_counter_resets_total"
	MetricCommitRollbacks = "greenflow_energy_collector_commit_rollbacks_total"
	MetricNodePower       = "greenflow_energy_collector_node_power_watts"
	MetricSourcesOwned    = "greenflow_energy_collector_shared_sources_owned"
	MetricPinnedStandby   = "greenflow_energy_collector_pinned_standby"
	MetricSourceHealthy   = "greenflow_energy_collector_source_healthy"
	MetricImplausible     = "greenflow_energy_collector_implausible_deltas_total"
	MetricCalRejected     = "greenflow_energy_collector_calibrations_rejected_total"
)

type metrics struct {
	resets    *prometheus.CounterVec
	rollbacks *prometheus.CounterVec
	power     *prometheus.GaugeVec
	owned     prometheus.Gauge
	standby   *prometheus.GaugeVec
	implaus   *prometheus.CounterVec
	// calRejected counts power-model fits refused by the quality rule.
	calRejected *prometheus.CounterVec
}

func newMetrics() metrics {
	perSource := []string{"source"}
	return metrics{
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCounterResets,
			Help: "Energy counters that went backwards or jumped implausibly (exporter restart, raw counter wrap, driver reload) and were not used as deltas."}, perSource),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCommitRollbacks,
			Help: "Times a source dropped its uncommitted readings (commits blocked too long: ClickHouse down without a spool, or NATS down) and went back to its last commit; the next sample covers the stretch in one interval."}, perSource),
		power: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricNodePower, Help: "Last node power reading."}, perSource),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricSourcesOwned, Help: "Shared sources this instance samples now."}),
		standby: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricPinnedStandby,
			Help: "1 while another instance on this node holds the lock of this pinned source (this machine's meter) and this one stands by."}, perSource),
		implaus: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricImplausible,
			Help: "Counter increases implying more than the zone's plausible power: not counted as energy, recorded as gaps (reason implausible)."}, perSource),
		calRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCalRejected,
			Help: "Power-model calibration fits refused by the quality rule (energy.Calibration.Check), by the first rule failed: samples, spread, r2, slope, intercept, vcpus. Not stored, shared or used."}, []string{"source", "reason"}),
	}
}

// New builds a collector. For the single local source of the default
// configuration it chooses and checks the meter now (reading sysfs and
// /proc once), so a requested but unreadable RAPL fails at start-up; other
// sources are opened by their runners, which report failures as unhealthy
// sources and keep retrying. With a SpoolDir it opens (and locks) the spool.
// No network I/O.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Bus == nil || d.Store == nil {
		return nil, errors.New("energy collector needs NATS and a sample store")
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	cfg = cfg.withDefaults()
	c := &Collector{cfg: cfg, bus: d.Bus, clock: d.Clock,
		logger: d.Logger.With(zap.String("component", "energy-collector"), zap.String("instance", cfg.Instance)),
		// Many sources may share a host (promql sources all query one
		// Prometheus): keep enough idle connections not to redial every interval.
		http:   &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}},
		assign: newAssignments(), health: newHealthTracker(), ready: newReadiness(), m: newMetrics(),
		shared: map[string]SourceConfig{}, opened: map[string]energy.Source{},
		records: newRecords(), recStore: d.Store, calibrations: map[string]energy.Calibration{}, fixed: map[string]fixedProfile{},
	}
	c.maxPendingRows = max(cfg.BatchSize, cfg.MaxBuffered/max(1, len(cfg.sources())))
	if d.Registry != nil {
		for _, m := range []prometheus.Collector{c.m.resets, c.m.rollbacks, c.m.power, c.m.owned, c.m.standby, c.m.implaus, c.m.calRejected, c.health.gauge} {
			if err := d.Registry.Register(m); err != nil {
				return nil, fmt.Errorf("register collector metrics: %w", err)
			}
		}
	}
	if err := c.openSources(); err != nil {
		return nil, err
	}
	w, err := c.newWriter(d)
	if err != nil {
		return nil, err
	}
	c.writer = w
	// Declared last: from here on the bus reports the consumer as not
	// started until Run has it consuming.
	c.consumer = d.Bus.NewConsumer(bus.ConsumerCollector(cfg.Instance), c.handler())
	return c, nil
}

// openSources sorts the sources into pinned and shared ones, and opens the
// single local source of the default configuration.
func (c *Collector) openSources() error {
	var ids []string
	for _, s := range c.cfg.sources() {
		if s.Pinned {
			c.pinned = append(c.pinned, s)
		} else {
			c.shared[s.ID] = s
		}
		ids = append(ids, s.ID)
	}
	c.why = "sources: " + strings.Join(ids, ", ")
	if len(c.cfg.Sources) == 0 {
		src, reason, err := openSource(c.pinned[0], c.http)
		if err != nil {
			return fmt.Errorf("energy-collector.source %s: %w", c.cfg.Source, err)
		}
		c.opened[c.pinned[0].ID], c.why = src, reason
		if c.cfg.SourcesAbsent {
			c.logger.Warn("sources file absent: measuring this node with its local meter only", zap.String("sources_file", c.cfg.SourcesFile),
				zap.String("meter", reason))
		}
	}
	return nil
}

// newWriter builds the sample writer over the spool, or a memory backlog.
func (c *Collector) newWriter(d Deps) (*sink.Writer, error) {
	var q sink.Queue = sink.NewMemory(c.cfg.MaxBuffered)
	if c.cfg.SpoolDir != "" {
		dir, err := sink.OpenDir(c.cfg.SpoolDir, c.cfg.SpoolMaxBytes)
		if err != nil {
			return nil, fmt.Errorf("energy-collector.spoolDir: %w", err)
		}
		c.records.load(c.cfg.SpoolDir, c.logger) // the directory is ours now (locked)
		if dir.Len() > 0 {
			c.logger.Info("spooled rows from a previous run will be written", zap.Int("rows", dir.Rows()))
		}
		q = dir
	}
	w, err := sink.NewWriter(sink.Config{BatchSize: c.cfg.BatchSize, FlushInterval: c.cfg.FlushInterval, WriteTimeout: c.cfg.WriteTimeout,
		MaxPending: c.cfg.MaxBuffered}, sink.Deps{Store: d.Store, Queue: q, Logger: c.logger, Registry: d.Registry, Clock: c.clock,
		OnDrop: func(rows []store.Sample) { c.records.droppedSamples(rows, c.cfg.Instance) }})
	if err != nil {
		_ = q.Close()
		return nil, err
	}
	return w, nil
}

// Source explains which meter is used and why (the default local source),
// or lists the configured sources.
func (c *Collector) Source() string { return c.why }

// SourceHealth reports each source's health as last sampled.
func (c *Collector) SourceHealth() map[string]SourceHealth { return c.health.snapshot() }

// BacklogRows is the number of rows waiting for ClickHouse.
func (c *Collector) BacklogRows() int { return c.writer.BacklogRows() }

// Check implements service.Checker: the collector cannot do its work while
// its KV bucket is unusable (not opened yet, or heartbeats failing: NATS
// down, or restarted and the bucket not yet declared again), or while
// neither ClickHouse nor the spool takes rows. Its assignment consumer and
// the NATS connection are the bus's: its Check reports them, and /healthz
// asks both.
func (c *Collector) Check() error {
	return errors.Join(c.ready.check(), c.writer.Check())
}

// Init implements service.Initializer: it opens the collectors' KV bucket,
// without which the collector can neither share sources nor know its runs.
func (c *Collector) Init(ctx context.Context) error {
	kv, err := c.bus.KV(ctx, c.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("energy collector: %w", err)
	}
	c.kv = kv
	c.ready.set(condBucket, nil)
	return nil
}

// Run samples and consumes assignments until ctx ends; then it stops the
// samplers, hands its shared sources over, and drains the writer. It calls
// Init first unless that was done.
func (c *Collector) Run(ctx context.Context) error {
	if c.kv == nil {
		if err := c.Init(ctx); err != nil {
			return err
		}
	}
	c.logger.Info("energy collector started", zap.String("meter", c.why), zap.Duration("interval", c.cfg.Interval),
		zap.Int("pinned_sources", len(c.pinned)), zap.Int("shared_sources", len(c.shared)))
	var samplers service.Group
	samplers.Add("coordinator", service.Func(newCoordinator(c, c.kv, c.shared).run))
	samplers.Add("assignments", c.consumer)
	token := newToken()
	for _, sc := range c.pinned {
		samplers.Add("source "+sc.ID, service.Func(func(ctx context.Context) error { return c.runPinned(ctx, sc, token) }))
	}
	samplers.Add("overhead", service.Func(c.recordOverhead))
	samplers.Add("records", service.Func(c.runRecords))
	samplers.Add("calibrations", service.Func(c.syncCalibrations))

	// The writer outlives the samplers: their last commits wait, within
	// LeaseTTL, for their rows to be durable. It drains once they stopped.
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	var g service.Group
	g.Add("writer", c.writer)
	g.Add("samplers", service.Func(func(context.Context) error {
		defer stopWriter()
		return samplers.Run(ctx)
	}))
	return g.Run(wctx)
}

// pinnedRunner is the runner of a pinned source: it continues from its
// last commit in the spool directory, or without one starts from a
// baseline after a restart. fresh starts from a new baseline whatever the
// commit says (another instance read the meter since): the commit's rows
// are still written, its state is not continued. prev is this process's
// previous runner of the source (its lock lapsed and was taken again), or
// nil: its rows' fate is known here — written, or still with the writer —
// so they are followed, not written again from the commit file (which
// still carries them: that wrote every handed-over row twice after a
// lapse on a starved machine).
func (c *Collector) pinnedRunner(sc SourceConfig, fresh bool, prev *runner) (*runner, error) {
	var claim committer
	var start handover
	if c.cfg.SpoolDir != "" {
		f, h, err := openFileCommit(c.cfg.SpoolDir, sc.ID)
		if err != nil {
			return nil, fmt.Errorf("energy collector: %w", err)
		}
		claim, start = f, h
	}
	if fresh {
		start.state = nil
	}
	if prev != nil && !fresh {
		start.rows = nil
	}
	r := newRunner(c, sc, claim, start)
	if prev != nil && !fresh && prev.heldTicket != nil {
		r.held, r.heldRows, r.heldTicket = prev.held, prev.heldRows, prev.heldTicket
	}
	if !fresh {
		r.src = c.opened[sc.ID]
	}
	if r.src != nil && start.state != nil {
		r.restore(start.state)
		r.start.state = nil
	}
	return r, nil
}
