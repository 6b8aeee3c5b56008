// Package collector samples this node's energy meter at a fixed interval and
// attributes each interval's energy to the run targets assigned to it (local
// process trees) by CPU-time share, keeping the unattributed part explicit so
// that parts + unattributed = node total. Samples are written to ClickHouse
// in batches bounded by size and time.
package collector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// Config configures a collector instance.
type Config struct {
	Instance      string        `yaml:"instance"`
	Node          string        `yaml:"node"`
	Interval      time.Duration `yaml:"interval"`
	Source        string        `yaml:"source"` // auto | rapl | model
	PowercapRoot  string        `yaml:"powercapRoot"`
	ProcRoot      string        `yaml:"procRoot"`
	IdleWatts     float64       `yaml:"idleWatts"`
	MaxWatts      float64       `yaml:"maxWatts"`
	BatchSize     int           `yaml:"batchSize"`
	FlushInterval time.Duration `yaml:"flushInterval"`
	MaxBuffered   int           `yaml:"maxBuffered"`
}

// Default returns the defaults: the model uses Cloud Carbon Footprint's
// per-vCPU figures for this machine's vCPUs.
func Default() Config {
	host, _ := os.Hostname()
	return Config{Instance: host, Node: host, Interval: time.Second, Source: "auto", PowercapRoot: "/sys/class/powercap", ProcRoot: "/proc",
		IdleWatts: 1.48, MaxWatts: 7.0, BatchSize: 10000, FlushInterval: time.Second, MaxBuffered: 1_000_000}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Instance == "" {
		errs = append(errs, errors.New("energy-collector.instance: required"))
	}
	if c.Node == "" {
		errs = append(errs, errors.New("energy-collector.node: required"))
	}
	if c.Interval < 50*time.Millisecond {
		errs = append(errs, fmt.Errorf("energy-collector.interval: got %s, expected at least 50ms", c.Interval))
	}
	if c.Source != "auto" && c.Source != "rapl" && c.Source != "model" {
		errs = append(errs, fmt.Errorf("energy-collector.source: got %q, expected auto, rapl or model", c.Source))
	}
	if c.IdleWatts < 0 || c.MaxWatts < c.IdleWatts {
		errs = append(errs, fmt.Errorf("energy-collector.idleWatts/maxWatts: got %g/%g, expected 0 <= idle <= max", c.IdleWatts, c.MaxWatts))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("energy-collector.batchSize: got %d, expected 1 or more", c.BatchSize))
	}
	return errors.Join(errs...)
}

// SampleWriter stores samples.
type SampleWriter interface {
	InsertSamples(ctx context.Context, samples []store.Sample) error
}

var _ SampleWriter = (*store.Store)(nil)

// Collector is one energy-collector instance.
type Collector struct {
	cfg    Config
	bus    *bus.Bus
	writer SampleWriter
	logger *zap.Logger
	meter  energy.NodeMeter
	why    string
	procfs energy.ProcFS

	mu      sync.Mutex
	targets map[string][]events.Target // run → targets on this node
	lastCPU map[string]float64         // target → process tree CPU seconds
	cumJ    map[string]float64         // series → cumulative J

	bufMu   sync.Mutex
	buf     []store.Sample
	dropped prometheus.Counter
	written prometheus.Counter
	failed  prometheus.Counter
	power   prometheus.Gauge
}

// New builds a collector and chooses its meter (reading sysfs once, no
// network I/O).
func New(cfg Config, b *bus.Bus, w SampleWriter, logger *zap.Logger, reg prometheus.Registerer) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Collector{cfg: cfg, bus: b, writer: w, logger: logger.With(zap.String("component", "energy-collector"), zap.String("node", cfg.Node)),
		procfs: energy.ProcFS{Root: cfg.ProcRoot}, targets: map[string][]events.Target{}, lastCPU: map[string]float64{}, cumJ: map[string]float64{},
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_collector_samples_dropped_total", Help: "Samples lost because the buffer was full."}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_collector_samples_written_total", Help: "Samples written to ClickHouse."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_collector_write_failures_total", Help: "Failed sample batch writes (retried)."}),
		power:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_collector_node_power_watts", Help: "Last node power reading."}),
	}
	if reg != nil {
		for _, m := range []prometheus.Collector{c.dropped, c.written, c.failed, c.power} {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("register collector metrics: %w", err)
			}
		}
	}
	var err error
	switch cfg.Source {
	case "model":
		mm := energy.NewModelMeter(cfg.ProcRoot, cfg.IdleWatts, cfg.MaxWatts)
		if err := mm.Validate(); err != nil {
			return nil, err
		}
		c.meter, c.why = mm, "model requested"
	case "rapl":
		c.meter, err = energy.NewRAPLMeter(cfg.PowercapRoot, cfg.ProcRoot)
		if err != nil {
			return nil, fmt.Errorf("energy-collector.source rapl: %w", err)
		}
		c.why = "rapl requested"
	default:
		c.meter, c.why, err = energy.NewAutoMeter(cfg.PowercapRoot, cfg.ProcRoot, cfg.IdleWatts, cfg.MaxWatts)
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Source explains which meter is used and why.
func (c *Collector) Source() string { return c.why }

// Run samples and consumes assignments until ctx ends, then flushes.
func (c *Collector) Run(ctx context.Context) error {
	c.logger.Info("energy collector started", zap.String("meter", c.why), zap.Duration("interval", c.cfg.Interval))
	errc := make(chan error, 1)
	go func() { errc <- c.bus.Consume(ctx, bus.ConsumerCollector(c.cfg.Instance), c.handle) }()
	sample := time.NewTicker(c.cfg.Interval)
	defer sample.Stop()
	flush := time.NewTicker(c.cfg.FlushInterval)
	defer flush.Stop()
	c.sample(time.Now()) // baseline reading
	for {
		select {
		case <-ctx.Done():
			<-errc
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c.flush(fctx)
			return nil
		case err := <-errc:
			return err
		case now := <-sample.C:
			c.sample(now)
			if c.buffered() >= c.cfg.BatchSize {
				c.flush(ctx)
			}
		case <-flush.C:
			c.flush(ctx)
		}
	}
}

func (c *Collector) handle(_ context.Context, d bus.Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := d.Msg.(type) {
	case *events.CollectAssign:
		var mine []events.Target
		for _, t := range m.Targets {
			if t.Node == c.cfg.Node && t.Kind == "process" && t.PID > 0 {
				mine = append(mine, t)
			}
		}
		c.targets[m.RunID] = mine
		c.logger.Info("targets assigned", zap.String("run_id", m.RunID), zap.Int("targets", len(mine)))
	case *events.CollectRelease:
		for _, t := range c.targets[m.RunID] {
			delete(c.lastCPU, t.ID)
		}
		delete(c.targets, m.RunID)
	default:
		return bus.Permanent(fmt.Errorf("collector does not handle %T", d.Msg))
	}
	return nil
}

// sample reads the meter and attributes the interval's energy.
func (c *Collector) sample(now time.Time) {
	r, err := c.meter.Read(now)
	if err != nil {
		c.logger.Warn("meter read failed", zap.Error(err))
		return
	}
	c.mu.Lock()
	var tgts []events.Target
	for _, ts := range c.targets {
		tgts = append(tgts, ts...)
	}
	pids := make([]int, 0, len(tgts))
	for _, t := range tgts {
		pids = append(pids, t.PID)
	}
	cpu, cerr := c.procfs.ProcessTreesCPUSeconds(pids)
	if cerr != nil {
		c.logger.Debug("process cpu read incomplete", zap.Error(cerr))
	}
	shares := map[string]float64{}
	for _, t := range tgts {
		cur, ok := cpu[t.PID]
		if !ok {
			continue // process gone
		}
		if prev, seen := c.lastCPU[t.ID]; seen && cur >= prev {
			shares[t.ID] = cur - prev
		}
		c.lastCPU[t.ID] = cur
	}
	if r.Interval == 0 {
		c.mu.Unlock()
		return // first reading: baseline only
	}
	ms := now.UnixMilli()
	iv := uint32(r.Interval.Milliseconds())
	secs := r.Interval.Seconds()
	nodeID := "node/" + c.cfg.Node
	base := store.Sample{TsMs: ms, Node: c.cfg.Node, Source: r.Source, IntervalMs: iv, Estimated: r.Estimated, Collector: c.cfg.Instance}
	out := make([]store.Sample, 0, 2+len(r.Zones)+len(shares))
	add := func(scope, target, zone string, deltaJ float64) {
		key := scope + "|" + target + "|" + zone
		c.cumJ[key] += deltaJ
		s := base
		s.Scope, s.TargetID, s.Zone, s.DeltaJ, s.EnergyJ, s.PowerW = scope, target, zone, deltaJ, c.cumJ[key], deltaJ/secs
		out = append(out, s)
	}
	add("node", nodeID, "", r.TotalDeltaJ)
	for _, z := range r.Zones {
		add("zone", nodeID, z.Zone, z.DeltaJ)
	}
	att := energy.Attribute(r.TotalDeltaJ, r.CPU, shares)
	ids := make([]string, 0, len(att.Parts))
	for id := range att.Parts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		add("process", id, "", att.Parts[id])
	}
	add("unattributed", nodeID, "", att.Unattributed)
	c.mu.Unlock()
	c.power.Set(r.TotalPowerW)
	c.bufMu.Lock()
	if room := c.cfg.MaxBuffered - len(c.buf); room < len(out) {
		c.dropped.Add(float64(len(out) - max(room, 0)))
		out = out[:max(room, 0)]
	}
	c.buf = append(c.buf, out...)
	c.bufMu.Unlock()
}

func (c *Collector) buffered() int {
	c.bufMu.Lock()
	defer c.bufMu.Unlock()
	return len(c.buf)
}

// flush writes the buffer; on failure the samples stay buffered.
func (c *Collector) flush(ctx context.Context) {
	c.bufMu.Lock()
	batch := c.buf
	c.buf = nil
	c.bufMu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := c.writer.InsertSamples(ctx, batch); err != nil {
		c.failed.Inc()
		c.logger.Warn("sample write failed; keeping samples buffered", zap.Int("samples", len(batch)), zap.Error(err))
		c.bufMu.Lock()
		c.buf = append(batch, c.buf...)
		c.bufMu.Unlock()
		return
	}
	c.written.Add(float64(len(batch)))
}
