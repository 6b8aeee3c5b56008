// Package collector samples energy sources — this machine's RAPL counters or
// utilisation model, Kepler and Scaphandre exporters, Prometheus — at a
// fixed interval and attributes each interval's node energy to the run
// targets on that node (process trees, pods), keeping the unattributed part
// explicit so that parts + unattributed = node total. Samples go to
// ClickHouse in batches bounded by size and time, through a bounded backlog
// while ClickHouse is unreachable (package sink).
//
// Several instances share the exporter sources through JetStream KV: see
// coordinator for membership, ownership and the hand-over, and runner for
// the commit protocol that keeps every interval stored, and none twice,
// whenever an instance dies (rows ride in the commit of the checkpoint
// that follows them, and a commit waits until the previous one's rows are
// durable). Pinned sources commit the same way to a file in the spool
// directory, so a restarted collector continues them exactly.
package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

// MetricCollectorCPU is the run metric holding a collector's cumulative CPU
// seconds (the analyzer reports the growth over a run's window as the
// measurement overhead).
const MetricCollectorCPU = "collector_cpu_seconds"

// Store is where samples and run metrics go.
type Store = sink.Store

// Collector is one energy-collector instance.
type Collector struct {
	cfg    Config
	bus    *bus.Bus
	kv     jetstream.KeyValue
	logger *zap.Logger
	writer *sink.Writer
	http   *http.Client
	assign *assignments
	health *healthTracker
	ready  *readiness
	m      metrics
	why    string

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

type metrics struct {
	resets    *prometheus.CounterVec
	rollbacks *prometheus.CounterVec
	power     *prometheus.GaugeVec
	owned     prometheus.Gauge
}

// New builds a collector. For the single local source of the default
// configuration it chooses and checks the meter now (reading sysfs and
// /proc once), so a requested but unreadable RAPL fails at start-up; other
// sources are opened by their runners, which report failures as unhealthy
// sources and keep retrying. With a SpoolDir it opens (and locks) the spool.
// No network I/O.
func New(cfg Config, b *bus.Bus, st Store, logger *zap.Logger, reg prometheus.Registerer) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if b == nil || st == nil {
		return nil, errors.New("energy collector needs NATS and a sample store")
	}
	cfg = cfg.withDefaults()
	c := &Collector{cfg: cfg, bus: b, logger: logger.With(zap.String("component", "energy-collector"), zap.String("instance", cfg.Instance)),
		// Many sources may share a host (promql sources all query one
		// Prometheus): keep enough idle connections not to redial every interval.
		http:   &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}},
		assign: newAssignments(), shared: map[string]SourceConfig{}, opened: map[string]energy.Source{},
		m: metrics{
			resets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_collector_counter_resets_total",
				Help: "Energy counters that went backwards or jumped implausibly (exporter restart, raw counter wrap) and were not used as deltas."}, []string{"source"}),
			rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_collector_commit_rollbacks_total",
				Help: "Times a source dropped its uncommitted readings (commits blocked too long: ClickHouse down without a spool, or NATS down) and went back to its last commit; the next sample covers the stretch in one interval."}, []string{"source"}),
			power: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "greenflow_collector_node_power_watts", Help: "Last node power reading."}, []string{"source"}),
			owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_collector_shared_sources_owned", Help: "Shared sources this instance samples now."}),
		},
	}
	c.health = newHealthTracker()
	c.ready = newReadiness()
	c.maxPendingRows = max(cfg.BatchSize, cfg.MaxBuffered/max(1, len(cfg.sources())))
	if reg != nil {
		for _, m := range []prometheus.Collector{c.m.resets, c.m.rollbacks, c.m.power, c.m.owned, c.health.gauge} {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("register collector metrics: %w", err)
			}
		}
	}

	var why []string
	for _, s := range cfg.sources() {
		if s.Pinned {
			c.pinned = append(c.pinned, s)
		} else {
			c.shared[s.ID] = s
		}
		why = append(why, s.ID)
	}
	c.why = "sources: " + strings.Join(why, ", ")
	if len(cfg.Sources) == 0 {
		src, reason, err := openSource(c.pinned[0], c.http)
		if err != nil {
			return nil, fmt.Errorf("energy-collector.source %s: %w", cfg.Source, err)
		}
		c.opened[c.pinned[0].ID], c.why = src, reason
	}

	var q sink.Queue = sink.NewMemory(cfg.MaxBuffered)
	if cfg.SpoolDir != "" {
		d, err := sink.OpenDir(cfg.SpoolDir, cfg.SpoolMaxBytes)
		if err != nil {
			return nil, fmt.Errorf("energy-collector.spoolDir: %w", err)
		}
		if d.Len() > 0 {
			c.logger.Info("spooled rows from a previous run will be written", zap.Int("rows", d.Rows()))
		}
		q = d
	}
	w, err := sink.NewWriter(sink.Config{BatchSize: cfg.BatchSize, FlushInterval: cfg.FlushInterval, WriteTimeout: cfg.WriteTimeout,
		MaxPending: cfg.MaxBuffered}, st, q, c.logger, reg)
	if err != nil {
		_ = q.Close()
		return nil, err
	}
	c.writer = w
	// Declared last: from here on the bus reports the consumer as not
	// started until Run has it consuming.
	c.consumer = b.NewConsumer(bus.ConsumerCollector(cfg.Instance), c.handle)
	return c, nil
}

// Source explains which meter is used and why (the default local source),
// or lists the configured sources.
func (c *Collector) Source() string { return c.why }

// SourceHealth reports each source's health as last sampled.
func (c *Collector) SourceHealth() map[string]SourceHealth { return c.health.snapshot() }

// BacklogRows is the number of rows waiting for ClickHouse.
func (c *Collector) BacklogRows() int { return c.writer.BacklogRows() }

// Check implements service.Checker: the collector cannot do its work while
// its KV bucket is unusable (heartbeats failing: NATS down, or restarted
// and the bucket not yet declared again), or while neither ClickHouse nor
// the spool takes rows. Its assignment consumer and the NATS connection
// are the bus's: its Check reports them, and /healthz asks both.
func (c *Collector) Check() error {
	return errors.Join(c.ready.check(), c.writer.Check())
}

var _ service.Checker = (*Collector)(nil)

// Run samples and consumes assignments until ctx ends; then it stops the
// samplers, hands its shared sources over, and drains the writer.
func (c *Collector) Run(ctx context.Context) error {
	kv, err := c.bus.KV(ctx, c.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("energy collector: %w", err)
	}
	c.kv = kv
	c.ready.set(condBucket, nil)
	c.logger.Info("energy collector started", zap.String("meter", c.why), zap.Duration("interval", c.cfg.Interval),
		zap.Int("pinned_sources", len(c.pinned)), zap.Int("shared_sources", len(c.shared)))

	// Pinned sources continue from their last commit in the spool
	// directory; without one they start from a baseline after a restart.
	runners := make([]*runner, 0, len(c.pinned))
	for _, sc := range c.pinned {
		var claim committer
		var start handover
		if c.cfg.SpoolDir != "" {
			f, h, err := openFileCommit(c.cfg.SpoolDir, sc.ID)
			if err != nil {
				return fmt.Errorf("energy collector: %w", err)
			}
			claim, start = f, h
		}
		r := newRunner(c, sc, claim, start)
		r.src = c.opened[sc.ID]
		if r.src != nil && start.state != nil {
			r.restore(start.state)
			r.start.state = nil
		}
		runners = append(runners, r)
	}

	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	wdone := make(chan error, 1)
	go func() { wdone <- c.writer.Run(wctx) }()

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(c.pinned)+3) // one per goroutine: none blocks on a report
	goRun := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(sctx); err != nil {
				errc <- err
			}
		}()
	}
	goRun(newCoordinator(c, kv, c.shared).run)
	goRun(c.consumer.Run)
	for _, r := range runners {
		goRun(r.run)
	}
	goRun(c.recordOverhead)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	scancel()
	wg.Wait()
	wcancel()
	return errors.Join(runErr, <-wdone)
}

func (c *Collector) handle(ctx context.Context, d bus.Delivery) error {
	switch m := d.Msg.(type) {
	case *events.CollectAssign:
		b, err := json.Marshal(m)
		if err != nil {
			return bus.Permanent(fmt.Errorf("encode assignment of run %s: %w", m.RunID, err))
		}
		c.runKeys.Lock()
		defer c.runKeys.Unlock()
		c.assign.put(*m)
		if _, err := c.kv.Put(ctx, runKey(m.RunID), b); err != nil {
			return fmt.Errorf("record assignment of run %s: %w", m.RunID, err)
		}
		c.logger.Info("targets assigned", zap.String("run_id", m.RunID), zap.Int("targets", len(m.Targets)))
	case *events.CollectRelease:
		c.runKeys.Lock()
		defer c.runKeys.Unlock()
		c.assign.delete(m.RunID)
		if err := c.kv.Delete(ctx, runKey(m.RunID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("remove assignment of run %s: %w", m.RunID, err)
		}
		c.logger.Info("targets released", zap.String("run_id", m.RunID))
	default:
		return bus.Permanent(fmt.Errorf("collector does not handle %T", d.Msg))
	}
	return nil
}

// recordOverhead writes, every interval while runs are being measured, this
// process's cumulative CPU time as the run metric collector_cpu_seconds of
// every active run, labelled with the instance. The analyzer takes its
// growth over a run's window as that run's measurement overhead; with
// several instances it sums them. In `greenflow dev` the process hosts every
// service, so the figure is an upper bound there.
func (c *Collector) recordOverhead(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	labels, _ := json.Marshal(map[string]string{"instance": c.cfg.Instance})
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			runs := c.assign.active()
			if len(runs) == 0 {
				continue
			}
			cpu, err := processCPUSeconds()
			if err != nil {
				c.logger.Warn("read own cpu time failed", zap.Error(err))
				continue
			}
			pts := make([]store.RunMetric, len(runs))
			for i, r := range runs {
				pts[i] = store.RunMetric{ExperimentID: r.ExperimentID, RunID: r.RunID, TsMs: now.UnixMilli(),
					Name: MetricCollectorCPU, Labels: string(labels), Value: cpu}
			}
			c.writer.AddMetrics(pts)
		}
	}
}

// processCPUSeconds is this process's user plus system CPU time.
func processCPUSeconds() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), nil
}

// Readiness conditions (see Check).
const condBucket = "kv_bucket"

// readiness holds the conditions that keep the collector from working;
// safe for concurrent use.
type readiness struct {
	mu    sync.Mutex
	conds map[string]error
}

func newReadiness() *readiness {
	return &readiness{conds: map[string]error{
		condBucket: errors.New("kv bucket not opened yet"),
	}}
}

func (r *readiness) set(cond string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.conds, cond)
		return
	}
	r.conds[cond] = err
}

func (r *readiness) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.conds))
	for k := range r.conds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = fmt.Errorf("%s: %w", k, r.conds[k])
	}
	return errors.Join(errs...)
}

// SourceHealth is one source's state as last sampled.
type SourceHealth struct {
	Healthy bool
	Reason  string // why not, when not
}

type healthTracker struct {
	mu    sync.Mutex
	state map[string]SourceHealth
	gauge *prometheus.GaugeVec
}

func newHealthTracker() *healthTracker {
	return &healthTracker{state: map[string]SourceHealth{}, gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "greenflow_collector_source_healthy",
		Help: "1 when the source's last reading succeeded, 0 when it failed (the reason is logged).",
	}, []string{"source"})}
}

func (h *healthTracker) set(id string, ok bool, reason string) {
	h.mu.Lock()
	h.state[id] = SourceHealth{Healthy: ok, Reason: reason}
	h.mu.Unlock()
	v := 0.0
	if ok {
		v = 1
	}
	h.gauge.WithLabelValues(id).Set(v)
}

func (h *healthTracker) snapshot() map[string]SourceHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]SourceHealth, len(h.state))
	for k, v := range h.state {
		out[k] = v
	}
	return out
}
