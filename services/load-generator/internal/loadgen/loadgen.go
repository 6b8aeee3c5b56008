// Package loadgen produces Theodolite UC-3 ActivePowerRecords into Kafka at a
// precise rate for the duration of a run's load phase, and reports records
// sent and the achieved rate every second.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// Config configures the load generator.
type Config struct {
	// Instance names this generator in events.
	Instance string `yaml:"instance"`
	// Tick is the pacing granularity.
	Tick time.Duration `yaml:"tick"`
	// FlushTimeout bounds the wait for outstanding records at the end.
	FlushTimeout time.Duration `yaml:"flushTimeout"`
}

// Default returns the defaults.
func Default() Config {
	host, _ := os.Hostname()
	return Config{Instance: host, Tick: 2 * time.Millisecond, FlushTimeout: 15 * time.Second}
}

// Generator is the load-generator service.
type Generator struct {
	cfg    Config
	bus    *bus.Bus
	logger *zap.Logger

	mu   sync.Mutex
	runs map[string]*job // run id → running or finished job

	sent, failed prometheus.Counter
	rate         prometheus.Gauge
}

type job struct {
	cancel context.CancelFunc
	done   chan struct{}
	result events.LoadFinished
}

// New builds the generator; no I/O.
func New(cfg Config, b *bus.Bus, logger *zap.Logger, reg prometheus.Registerer) (*Generator, error) {
	if cfg.Instance == "" {
		return nil, errors.New("load-generator.instance: required")
	}
	if cfg.Tick <= 0 {
		return nil, fmt.Errorf("load-generator.tick: got %s, expected a positive duration", cfg.Tick)
	}
	g := &Generator{cfg: cfg, bus: b, logger: logger.With(zap.String("component", "load-generator")), runs: map[string]*job{},
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_loadgen_records_sent_total", Help: "Records acknowledged by Kafka."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_loadgen_records_failed_total",
			Help: "Records Kafka did not acknowledge."}),
		rate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_loadgen_achieved_rate_per_second",
			Help: "Acknowledged records in the last second."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{g.sent, g.failed, g.rate} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register load-generator metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Run consumes load commands until ctx ends; running loads are stopped.
func (g *Generator) Run(ctx context.Context) error {
	err := g.bus.Consume(ctx, bus.ConsumerLoadGenerator, g.handle)
	g.mu.Lock()
	jobs := make([]*job, 0, len(g.runs))
	for _, j := range g.runs {
		j.cancel()
		jobs = append(jobs, j)
	}
	g.mu.Unlock()
	for _, j := range jobs {
		<-j.done
	}
	return err
}

func (g *Generator) handle(ctx context.Context, d bus.Delivery) error {
	switch m := d.Msg.(type) {
	case *events.LoadStart:
		if err := Validate(m); err != nil {
			fin := events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: g.cfg.Instance, Failed: true, Reason: err.Error()}
			_ = g.bus.Publish(ctx, fin, "load.finished:"+m.RunID+":"+g.cfg.Instance)
			return bus.Permanent(err)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if _, ok := g.runs[m.RunID]; ok {
			return nil // redelivery: already running or done
		}
		jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		j := &job{cancel: cancel, done: make(chan struct{})}
		g.runs[m.RunID] = j
		go func() {
			defer close(j.done)
			j.result = g.produce(jctx, *m)
			cancel()
			pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer pcancel()
			if err := g.bus.Publish(pctx, j.result, "load.finished:"+m.RunID+":"+g.cfg.Instance); err != nil {
				g.logger.Error("publish load finished failed", zap.String("run_id", m.RunID), zap.Error(err))
			}
		}()
		return nil
	case *events.LoadStop:
		g.mu.Lock()
		j, ok := g.runs[m.RunID]
		g.mu.Unlock()
		if ok {
			j.cancel()
		}
		return nil
	}
	return bus.Permanent(fmt.Errorf("load generator does not handle %T", d.Msg))
}

// Validate checks a load command before any load starts.
func Validate(m *events.LoadStart) error {
	var errs []error
	w := m.Workload
	if w.Sensors <= 0 {
		errs = append(errs, fmt.Errorf("workload.sensors: got %d, expected a positive number", w.Sensors))
	}
	if w.RatePerSec <= 0 || w.RatePerSec != w.RatePerSec {
		errs = append(errs, fmt.Errorf("workload.rate_per_sec: got %g, expected a positive rate", w.RatePerSec))
	}
	if _, err := uc3.ParseFormat(w.Format); err != nil {
		errs = append(errs, fmt.Errorf("workload.format: %w", err))
	}
	if len(m.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if m.Kafka.InputTopic == "" {
		errs = append(errs, errors.New("kafka.input_topic: required"))
	}
	return errors.Join(errs...)
}

// produce runs one load to its end and returns the finished report.
func (g *Generator) produce(ctx context.Context, m events.LoadStart) events.LoadFinished {
	fin := events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: g.cfg.Instance}
	logger := g.logger.With(zap.String("run_id", m.RunID))
	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Kafka.Brokers...), kgo.DefaultProduceTopic(m.Kafka.InputTopic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<20),
		kgo.RecordDeliveryTimeout(20*time.Second))
	if err != nil {
		fin.Failed, fin.Reason = true, fmt.Sprintf("kafka client: %v", err)
		return fin
	}
	defer cl.Close()
	// Fail before any load when the brokers cannot be reached.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = cl.Ping(pctx)
	cancel()
	if err != nil {
		fin.Failed, fin.Reason = true, fmt.Sprintf("kafka brokers %v unreachable: %v", m.Kafka.Brokers, err)
		return fin
	}
	format, _ := uc3.ParseFormat(m.Workload.Format)
	n := m.Workload.Sensors
	period := time.Duration(float64(n) * float64(time.Second) / m.Workload.RatePerSec)
	pacer := NewPacer(n, period, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = uc3.AppendSensorKey(nil, i)
	}
	var acked, errs atomic.Int64
	var firstErr atomic.Value
	onDone := func(_ *kgo.Record, err error) {
		if err != nil {
			errs.Add(1)
			g.failed.Inc()
			firstErr.CompareAndSwap(nil, err.Error())
			return
		}
		acked.Add(1)
		g.sent.Inc()
	}
	duration := time.Duration(m.DurationMs) * time.Millisecond
	start := time.Now()
	fin.StartMs = start.UnixMilli()
	ticker := time.NewTicker(g.cfg.Tick)
	defer ticker.Stop()
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	var produced, lastAcked int64
	lastProgress := start
	report := func(now time.Time) {
		a := acked.Load()
		rate := float64(a-lastAcked) / now.Sub(lastProgress).Seconds()
		lastAcked, lastProgress = a, now
		g.rate.Set(rate)
		_ = g.bus.Publish(ctx, events.LoadProgress{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: g.cfg.Instance, TsMs: now.UnixMilli(),
			RecordsSent: a, Errors: errs.Load(), RatePerSec: rate}, "")
	}
	logger.Info("load started", zap.Float64("rate_per_sec", m.Workload.RatePerSec), zap.Int("sensors", n), zap.Duration("duration", duration))
	stopped := false
loop:
	for {
		select {
		case <-ctx.Done():
			stopped = true
			break loop
		case now := <-progress.C:
			report(now)
		case now := <-ticker.C:
			elapsed := now.Sub(start)
			if elapsed > duration {
				elapsed = duration
			}
			due := pacer.Due(elapsed)
			for ; produced < due; produced++ {
				s := pacer.Sensor(produced)
				ts := start.Add(pacer.DueAt(produced)).UnixMilli()
				rec := uc3.ActivePowerRecord{Identifier: string(keys[s]), Timestamp: ts, ValueInW: m.Workload.ValueW}
				var val []byte
				if format == uc3.FormatJSON {
					val = uc3.AppendJSON(make([]byte, 0, 96), rec)
				} else {
					val = uc3.AppendConfluentAvro(make([]byte, 0, 48), m.Workload.SchemaID, rec)
				}
				cl.Produce(ctx, &kgo.Record{Key: keys[s], Value: val}, onDone)
			}
			if now.Sub(start) >= duration {
				break loop
			}
		}
	}
	fctx, fcancel := context.WithTimeout(context.Background(), g.cfg.FlushTimeout)
	ferr := cl.Flush(fctx)
	fcancel()
	end := time.Now()
	report(end)
	fin.EndMs = end.UnixMilli()
	fin.RecordsSent, fin.Errors = acked.Load(), errs.Load()
	if d := time.Duration(m.DurationMs) * time.Millisecond; d > 0 {
		fin.AchievedRate = float64(fin.RecordsSent) / d.Seconds()
	}
	switch {
	case ferr != nil:
		fin.Failed, fin.Reason = true, fmt.Sprintf("%d of %d records not delivered within %s: %v", produced-fin.RecordsSent, produced, g.cfg.FlushTimeout, ferr)
	case fin.Errors > 0:
		fin.Failed, fin.Reason = true, fmt.Sprintf("%d of %d records not delivered: %v", fin.Errors, produced, firstErr.Load())
	case stopped:
		fin.Reason = "stopped"
	}
	logger.Info("load finished", zap.Int64("records_sent", fin.RecordsSent), zap.Int64("errors", fin.Errors), zap.Bool("failed", fin.Failed))
	return fin
}
