// Package loadgen produces Theodolite UC-3 ActivePowerRecords into Kafka at a
// precise rate for the duration of a run's load phase. Several instances
// share a load: they split the key space into contiguous ranges through
// JetStream KV, take over the range of an instance that dies, and publish
// one load.finished per run summing them all (see plan.go). Each instance
// reports records sent, errors and the achieved rate every second.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// Deps are the generator's collaborators.
type Deps struct {
	Bus *bus.Bus
	// Store receives Kafka signals (high-water marks, consumer lag) as run
	// metrics; nil disables them.
	Store    kafkasignals.Sink
	Logger   *zap.Logger
	Registry prometheus.Registerer // may be nil
	Clock    Clock                 // nil: the real clock
	HTTP     *http.Client          // schema registry client; nil: a default with a timeout
}

// Generator is the load-generator service.
type Generator struct {
	cfg    Config
	bus    *bus.Bus
	sink   kafkasignals.Sink
	logger *zap.Logger
	clock  Clock
	hc     *http.Client
	m      metrics

	members, runs jetstream.KeyValue // opened by Run

	closing atomic.Bool // Run is shutting down

	mu       sync.Mutex
	jobs     map[string]*job      // run id → this instance's job, running or done
	plans    map[string]planEntry // unfinished plans seen
	samplers map[string]*sampling
	poke     chan struct{}
}

type planEntry struct {
	p   *plan
	rev uint64
}

type metrics struct {
	sent, failed, takeovers prometheus.Counter
	rate, members           prometheus.Gauge
	assigned, backlog       prometheus.Gauge
}

// New builds the generator; no I/O.
func New(cfg Config, d Deps) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Bus == nil {
		return nil, errors.New("load-generator: a bus is required")
	}
	if d.Clock == nil {
		d.Clock = realClock{}
	}
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	g := &Generator{cfg: cfg, bus: d.Bus, sink: d.Store, logger: d.Logger.With(zap.String("component", "load-generator"), zap.String("instance", cfg.Instance)),
		clock: d.Clock, hc: d.HTTP, jobs: map[string]*job{}, plans: map[string]planEntry{}, samplers: map[string]*sampling{},
		poke: make(chan struct{}, 1),
		m: metrics{
			sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_loadgen_records_sent_total", Help: "Records acknowledged by Kafka."}),
			failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_loadgen_records_failed_total",
				Help: "Records Kafka did not acknowledge."}),
			rate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_loadgen_achieved_rate_per_second",
				Help: "Acknowledged records of the last reported second of schedule."}),
			assigned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_loadgen_assigned_sensors",
				Help: "Sensors this instance produces for running loads."}),
			backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_loadgen_backlog_records",
				Help: "Records due but not produced yet (behind schedule)."}),
			members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_loadgen_members",
				Help: "Live load-generator instances this instance sees."}),
			takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_loadgen_range_takeovers_total",
				Help: "Re-assignments of dead instances' key ranges this instance made as leader."}),
		},
	}
	if d.Registry != nil {
		for _, c := range []prometheus.Collector{g.m.sent, g.m.failed, g.m.rate, g.m.assigned, g.m.backlog, g.m.members, g.m.takeovers} {
			if err := d.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register load-generator metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Run joins the load-generator membership and consumes load commands until
// ctx ends; then it stops its running loads (their ranges are taken over by
// the other instances), reports them, and leaves.
func (g *Generator) Run(ctx context.Context) error {
	if err := g.open(ctx); err != nil {
		return err
	}
	if err := g.heartbeat(ctx); err != nil {
		return fmt.Errorf("join load-generator membership: %w", err)
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { g.heartbeats(bg) })
	wg.Go(func() { g.watchPlans(bg) })
	wg.Go(func() { g.lead(bg) })

	err := g.bus.Consume(ctx, bus.ConsumerLoadGenerator, g.handle)

	g.mu.Lock()
	g.closing.Store(true) // under the lock: no job starts after the list below
	jobs := make([]*job, 0, len(g.jobs))
	for _, j := range g.jobs {
		j.cancel()
		jobs = append(jobs, j)
	}
	g.mu.Unlock()
	for _, j := range jobs {
		<-j.done
	}
	lctx, cancel := context.WithTimeout(bg, 2*time.Second)
	if err := g.members.Delete(lctx, g.cfg.Instance); err != nil {
		g.logger.Warn("leave membership failed; the key expires instead", zap.Error(err))
	}
	cancel()
	stopBG()
	wg.Wait()
	g.mu.Lock()
	runs := make([]string, 0, len(g.samplers))
	for run := range g.samplers {
		runs = append(runs, run)
	}
	g.mu.Unlock()
	for _, run := range runs {
		g.stopSampler(run, true)
	}
	return err
}

func (g *Generator) open(ctx context.Context) error {
	js := g.bus.JetStream()
	var err error
	g.members, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketMembers, TTL: g.cfg.MemberTTL,
		History: 1, Storage: jetstream.MemoryStorage, Description: "Live load-generator instances (heartbeats)"})
	if err != nil {
		return fmt.Errorf("open kv bucket %s: %w", BucketMembers, err)
	}
	g.runs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketRuns, TTL: runsTTL,
		History: 1, Storage: jetstream.FileStorage, Description: "Load plans (key ranges per instance) and per-instance counts"})
	if err != nil {
		return fmt.Errorf("open kv bucket %s: %w", BucketRuns, err)
	}
	return nil
}

func (g *Generator) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(struct {
		Instance string `json:"instance"`
		TsMs     int64  `json:"ts_ms"`
	}{g.cfg.Instance, g.clock.Now().UnixMilli()})
	_, err := g.members.Put(ctx, g.cfg.Instance, b)
	return err
}

func (g *Generator) heartbeats(ctx context.Context) {
	t := g.clock.NewTicker(g.cfg.MemberTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			hctx, cancel := context.WithTimeout(ctx, g.cfg.MemberTTL)
			if err := g.heartbeat(hctx); err != nil && ctx.Err() == nil {
				g.logger.Warn("heartbeat failed", zap.Error(err))
			}
			cancel()
		}
	}
}

// alive lists the live instances.
func (g *Generator) alive(ctx context.Context) (map[string]bool, error) {
	l, err := g.members.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list kv bucket %s: %w", BucketMembers, err)
	}
	out := map[string]bool{}
	for k := range l.Keys() {
		out[k] = true
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (g *Generator) handle(ctx context.Context, d bus.Delivery) error {
	switch m := d.Msg.(type) {
	case *events.LoadStart:
		return g.accept(ctx, m)
	case *events.LoadStop:
		return g.stop(ctx, m)
	}
	return bus.Permanent(fmt.Errorf("load generator does not handle %T", d.Msg))
}

// finishedID de-duplicates a run's load.finished across instances.
func finishedID(run string) string { return "load.finished:" + run }

func (g *Generator) publishFailed(ctx context.Context, m *events.LoadStart, reason string) error {
	now := g.clock.Now().UnixMilli()
	fin := events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: g.cfg.Instance, StartMs: now, EndMs: now, Failed: true, Reason: reason}
	g.logger.Warn("load rejected", zap.String("run_id", m.RunID), zap.String("reason", reason))
	return g.bus.Publish(ctx, fin, finishedID(m.RunID))
}

// accept checks a load command, registers the schema, and writes the run's
// plan, splitting the key space over the live instances.
func (g *Generator) accept(ctx context.Context, m *events.LoadStart) error {
	if err := Validate(m); err != nil {
		if perr := g.publishFailed(ctx, m, err.Error()); perr != nil {
			return perr
		}
		return bus.Permanent(err)
	}
	if _, err := g.runs.Get(ctx, planKey(m.RunID)); err == nil {
		return nil // redelivery: already accepted
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read plan of run %s: %w", m.RunID, err)
	}
	if err := pingBrokers(ctx, m.Kafka.Brokers); err != nil {
		return g.publishFailed(ctx, m, err.Error())
	}
	schemaID := m.Workload.SchemaID
	if f, _ := uc3.ParseFormat(m.Workload.Format); f == uc3.FormatAvro && g.cfg.SchemaRegistryURL != "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		id, err := uc3.RegisterSchema(rctx, g.hc, g.cfg.SchemaRegistryURL, g.cfg.SchemaSubject, uc3.ActivePowerRecordSchema)
		cancel()
		if err != nil {
			return g.publishFailed(ctx, m, err.Error())
		}
		schemaID = id
	}
	alive, err := g.alive(ctx)
	if err != nil {
		return err
	}
	alive[g.cfg.Instance] = true
	names := sortedKeys(alive)
	p := plan{Cmd: *m, StartMs: g.clock.Now().Add(g.cfg.StartDelay).UnixMilli(), PeriodNs: int64(period(m.Workload)), Seed: rand.Uint64(),
		SchemaID: schemaID, Ranges: split(0, m.Workload.Sensors, names), Participants: names, Coordinator: g.cfg.Instance}
	if err := checkCover(p.Ranges, m.Workload.Sensors); err != nil {
		return bus.Permanent(fmt.Errorf("plan run %s: %w", m.RunID, err))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan of run %s: %w", m.RunID, err)
	}
	if _, err := g.runs.Create(ctx, planKey(m.RunID), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return fmt.Errorf("write plan of run %s: %w", m.RunID, err)
	}
	g.logger.Info("load accepted", zap.String("run_id", m.RunID), zap.Float64("rate_per_sec", m.Workload.RatePerSec),
		zap.Int("sensors", m.Workload.Sensors), zap.Strings("instances", names), zap.Uint32("schema_id", schemaID))
	return nil
}

// stop marks the run's plan stopped; every instance then stops its share.
func (g *Generator) stop(ctx context.Context, m *events.LoadStop) error {
	return g.markStopped(ctx, m.RunID)
}

// markStopped sets the plan's Stopped flag (revision-checked).
func (g *Generator) markStopped(ctx context.Context, run string) error {
	for attempt := 0; ; attempt++ {
		e, err := g.runs.Get(ctx, planKey(run))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // never started (rejected) or long gone
		}
		if err != nil {
			return fmt.Errorf("read plan of run %s: %w", run, err)
		}
		var p plan
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return bus.Permanent(fmt.Errorf("decode plan of run %s: %w", run, err))
		}
		if p.Stopped || p.Finished {
			return nil
		}
		p.Stopped = true
		b, _ := json.Marshal(p)
		if _, err := g.runs.Update(ctx, planKey(run), b, e.Revision()); err == nil {
			return nil
		} else if attempt >= 5 {
			return fmt.Errorf("mark run %s stopped: %w", run, err)
		}
	}
}

// Validate checks a load command before any load starts.
func Validate(m *events.LoadStart) error {
	var errs []error
	w := m.Workload
	if w.Sensors <= 0 {
		errs = append(errs, fmt.Errorf("workload.sensors: got %d, expected a positive number", w.Sensors))
	}
	switch {
	case math.IsNaN(w.RatePerSec) || math.IsInf(w.RatePerSec, 0) || w.RatePerSec <= 0:
		errs = append(errs, fmt.Errorf("workload.rate_per_sec: got %g, expected a positive rate", w.RatePerSec))
	case w.Sensors > 0 && float64(w.Sensors)/w.RatePerSec < 1e-6:
		errs = append(errs, fmt.Errorf("workload.rate_per_sec: got %g for %d sensors, expected at most 1,000,000 per sensor", w.RatePerSec, w.Sensors))
	}
	if _, err := uc3.ParseFormat(w.Format); err != nil {
		errs = append(errs, fmt.Errorf("workload.format: %w", err))
	}
	if m.DurationMs <= 0 {
		errs = append(errs, fmt.Errorf("duration_ms: got %d, expected a positive duration", m.DurationMs))
	}
	if len(m.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if m.Kafka.InputTopic == "" {
		errs = append(errs, errors.New("kafka.input_topic: required"))
	}
	return errors.Join(errs...)
}

// pingBrokers fails when no seed broker answers within 10 s.
func pingBrokers(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("kafka client for %v: %w", brokers, err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		return fmt.Errorf("kafka brokers %v unreachable: %w", brokers, err)
	}
	return nil
}

// watchPlans follows the plans and starts, re-shares and stops this
// instance's jobs accordingly.
func (g *Generator) watchPlans(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := g.runs.Watch(ctx, "plan.>")
		if err != nil {
			g.logger.Warn("watch load plans failed; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e != nil {
				g.onPlan(ctx, e)
			}
		}
		_ = w.Stop()
	}
}

func (g *Generator) onPlan(ctx context.Context, e jetstream.KeyValueEntry) {
	run := e.Key()[len("plan."):]
	if e.Operation() != jetstream.KeyValuePut {
		g.mu.Lock()
		delete(g.plans, run)
		g.mu.Unlock()
		return
	}
	var p plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		g.logger.Error("undecodable load plan", zap.String("run_id", run), zap.Error(err))
		return
	}
	g.mu.Lock()
	if p.Finished {
		delete(g.plans, run)
	} else {
		g.plans[run] = planEntry{&p, e.Revision()}
	}
	j := g.jobs[run]
	g.mu.Unlock()
	switch {
	case j != nil && (p.Stopped || p.Finished):
		j.cancel()
	case j != nil:
		j.setShare(&p, g.cfg.Instance)
	case p.Stopped || p.Finished || !p.participates(g.cfg.Instance):
	default:
		// Also after the end of the schedule: an instance restarted late
		// still reports its part (what it missed) from its checkpoint.
		g.startJob(ctx, &p)
	}
}

// job is this instance's part in one run.
type job struct {
	run    string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	w       *worker // nil until built
	latest  *plan   // newest plan seen
	epoch   int     // of the share given to w
	applied bool
	resume  []laneCkpt // this instance's checkpointed lanes, for its first share
}

// setShare hands the worker this instance's share of a newer plan.
func (j *job) setShare(p *plan, instance string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.latest == nil || p.Epoch >= j.latest.Epoch {
		j.latest = p
	}
	j.applyLocked(instance)
}

func (j *job) applyLocked(instance string) {
	p := j.latest
	if j.w == nil || p == nil || (j.applied && p.Epoch <= j.epoch) {
		return
	}
	pieces := p.piecesOf(instance)
	if !j.applied {
		pieces = resumeFrom(pieces, j.resume)
	}
	j.applied, j.epoch = true, p.Epoch
	j.w.share.Store(&share{epoch: p.Epoch, pieces: pieces})
}

func (j *job) plan() *plan {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.latest
}

func (g *Generator) startJob(ctx context.Context, p *plan) {
	run := p.Cmd.RunID
	g.mu.Lock()
	if _, ok := g.jobs[run]; ok || g.closing.Load() {
		g.mu.Unlock()
		return
	}
	jctx, cancel := context.WithCancel(ctx)
	j := &job{run: run, cancel: cancel, done: make(chan struct{}), latest: p}
	g.jobs[run] = j
	g.mu.Unlock()
	go func() {
		defer close(j.done)
		defer cancel()
		g.runJob(jctx, j)
		g.pokeLeader()
	}()
}

func (g *Generator) pokeLeader() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

// readStatus reads this instance's checkpoint of run, retrying while NATS
// does not answer: starting from zero instead would lose the count.
func (g *Generator) readStatus(ctx context.Context, run, instance string) (status, bool, error) {
	for {
		e, err := g.runs.Get(ctx, statusKey(run, instance))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return status{}, false, nil
		}
		if err == nil {
			var st status
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return status{}, false, fmt.Errorf("decode checkpoint of run %s: %w", run, err)
			}
			return st, true, nil
		}
		g.logger.Warn("read load checkpoint failed; retrying", zap.String("run_id", run), zap.Error(err))
		select {
		case <-ctx.Done():
			return status{}, false, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// runJob produces this instance's share of a run, checkpoints its progress
// every CheckpointInterval, and records its final count. After a restart it
// resumes from its checkpoint: counts continue, and its ranges are produced
// from their acked watermarks (back-filling what it missed while down).
func (g *Generator) runJob(ctx context.Context, j *job) {
	p := j.plan()
	run := p.Cmd.RunID
	logger := g.logger.With(zap.String("run_id", run))
	prev, found, err := g.readStatus(ctx, run, g.cfg.Instance)
	if err != nil {
		logger.Error("load share not started", zap.Error(err))
		return
	}
	if found && prev.Done {
		return // this instance finished its part before a restart
	}
	base := status{Instance: g.cfg.Instance, StartMs: p.StartMs}
	if found {
		base = prev
		base.Restarts++
		logger.Warn("load share resumed from its checkpoint", zap.Int64("records_sent", prev.Sent), zap.Int("restarts", base.Restarts),
			zap.Any("lanes", prev.Lanes))
	}
	w := newWorker(g.cfg, g.clock, p.schedule()) // builds the key table
	j.mu.Lock()
	j.resume = prev.Lanes
	j.w = w
	j.applyLocked(g.cfg.Instance)
	epoch := func() int { j.mu.Lock(); defer j.mu.Unlock(); return j.epoch }
	j.mu.Unlock()

	// snapshot is the checkpoint now: the base (the previous incarnation's
	// counts) plus this one's.
	snapshot := func() status {
		st := base
		st.Sent += w.acked.Load()
		st.Errors += w.failed.Load()
		st.Produced += w.produced.Load()
		st.Missed += w.skipped.Load()
		st.Backfilled += w.backfilled.Load()
		st.Epoch = epoch()
		st.Lanes = w.checkpoint()
		return st
	}
	finish := func(st status, failed bool, reason string) {
		st.Done, st.Failed, st.Reason = true, failed, reason
		st.EndMs = g.clock.Now().UnixMilli()
		g.putStatus(st, run)
		if failed {
			// The run has failed: stop every instance's share now rather
			// than at the end of the phase.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := g.markStopped(sctx, run); err != nil {
				logger.Warn("stop failed run", zap.Error(err))
			}
			cancel()
		}
		logger.Info("load share finished", zap.Int64("records_sent", st.Sent), zap.Int64("errors", st.Errors),
			zap.Int64("behind", st.Behind), zap.Int64("missed", st.Missed), zap.Int64("backfilled", st.Backfilled),
			zap.Bool("failed", failed), zap.String("reason", reason))
	}
	// No kgo.RecordDeliveryTimeout: kgo measures it from the record's
	// timestamp — the scheduled time — so it would fail back-filled
	// records at once. The worker's monitor fails the load instead when
	// Kafka acknowledges nothing for a while, and closing the client fails
	// what is still buffered.
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Cmd.Kafka.Brokers...), kgo.DefaultProduceTopic(p.Cmd.Kafka.InputTopic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		finish(snapshot(), true, fmt.Sprintf("kafka client for %v: %v", p.Cmd.Kafka.Brokers, err))
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = cl.Ping(pctx)
	cancel()
	if err != nil {
		cl.Close()
		finish(snapshot(), true, fmt.Sprintf("kafka brokers %v unreachable: %v", p.Cmd.Kafka.Brokers, err))
		return
	}
	w.prod = cl
	logger.Info("load share started", zap.Int("epoch", p.Epoch), zap.Any("ranges", p.piecesOf(g.cfg.Instance)))
	var lastSent, lastFailed, lastAssigned, lastBacklog int64
	report := func(pr progress) {
		g.m.sent.Add(float64(pr.sent - lastSent))
		g.m.failed.Add(float64(pr.errors - lastFailed))
		lastSent, lastFailed = pr.sent, pr.errors
		g.m.rate.Set(pr.rate)
		a, b := w.assigned.Load(), w.backlog.Load()
		if pr.final {
			a, b = 0, 0
		}
		g.m.assigned.Add(float64(a - lastAssigned))
		g.m.backlog.Add(float64(b - lastBacklog))
		lastAssigned, lastBacklog = a, b
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := g.bus.Publish(pctx, events.LoadProgress{ExperimentID: p.Cmd.ExperimentID, RunID: run, Instance: g.cfg.Instance,
			TsMs: pr.at.UnixMilli(), RecordsSent: base.Sent + pr.sent, Errors: base.Errors + pr.errors, RatePerSec: pr.rate}, ""); err != nil {
			logger.Warn("publish load progress failed", zap.Error(err))
		}
	}
	// Checkpoints, from now until the share ends.
	ckptCtx, stopCkpt := context.WithCancel(context.WithoutCancel(ctx))
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		t := g.clock.NewTicker(g.cfg.CheckpointInterval)
		defer t.Stop()
		for {
			select {
			case <-ckptCtx.Done():
				return
			case <-t.C():
				g.putStatus(snapshot(), run)
			}
		}
	}()
	// Anchor the cumulative series where this incarnation starts, so it
	// can be interpolated anywhere in the load.
	report(progress{at: maxTime(p.start(), g.clock.Now())})
	out, last := w.run(ctx, report)
	cl.Close() // fails whatever is still buffered
	w.settle(5 * time.Second)
	stopCkpt()
	<-ckptDone
	produced, acked := w.produced.Load(), w.acked.Load()
	undelivered := produced - acked
	report(progress{at: g.clock.Now(), sent: acked, errors: max(w.failed.Load(), undelivered), rate: w.finalRate(last, out.endedAt), final: true})
	st := snapshot()
	st.Errors = base.Errors + max(w.failed.Load(), undelivered)
	st.Behind = out.behind
	handedOver := out.stopped && g.closing.Load()
	if !handedOver {
		// Still due at the end and never produced. (On a shutdown, the
		// heirs produce them from this checkpoint instead.)
		st.Missed += out.behind
	}
	switch {
	case out.aborted != nil:
		finish(st, true, fmt.Sprintf("%d of %d records not delivered: %v", undelivered, produced, out.aborted))
	case undelivered > 0:
		finish(st, true, fmt.Sprintf("%d of %d records not delivered within %s: %v", undelivered, produced, g.cfg.FlushTimeout, out.flush))
	case handedOver:
		finish(st, false, "instance shut down; its ranges were handed over")
	case out.stopped:
		finish(st, false, "stopped")
	case out.behind > 0:
		finish(st, false, fmt.Sprintf("%d records due were not produced (behind schedule)", out.behind))
	default:
		finish(st, false, "")
	}
}

func (g *Generator) putStatus(st status, run string) {
	st.UpdatedMs = g.clock.Now().UnixMilli()
	b, _ := json.Marshal(st)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := g.runs.Put(ctx, statusKey(run, st.Instance), b); err != nil {
		g.logger.Warn("write load status failed", zap.String("run_id", run), zap.Error(err))
	}
}

// lead runs the leader's duties whenever this instance is the live instance
// with the smallest name.
func (g *Generator) lead(ctx context.Context) {
	t := g.clock.NewTicker(g.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-g.poke:
		}
		alive, err := g.alive(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.logger.Warn("list load generators failed", zap.Error(err))
			}
			continue
		}
		g.m.members.Set(float64(len(alive)))
		names := sortedKeys(alive)
		leader := len(names) > 0 && names[0] == g.cfg.Instance
		g.mu.Lock()
		plans := make([]planEntry, 0, len(g.plans))
		for _, e := range g.plans {
			plans = append(plans, e)
		}
		g.mu.Unlock()
		for _, e := range plans {
			if !leader {
				g.stopSampler(e.p.Cmd.RunID, false)
				continue
			}
			g.leadRun(ctx, e, alive)
		}
	}
}

// leadRun hands the ranges of dead instances to live ones while the load
// runs, and publishes the summary once every participant is done.
func (g *Generator) leadRun(ctx context.Context, e planEntry, alive map[string]bool) {
	p, run := e.p, e.p.Cmd.RunID
	logger := g.logger.With(zap.String("run_id", run))
	now := g.clock.Now()
	if !p.Stopped && now.Before(p.end()) {
		g.ensureSampler(ctx, p)
		g.takeOver(ctx, e, alive, logger)
		return
	}
	var sts []status
	var missing, lost []string
	var uncovered int64
	complete := true
	for _, i := range p.Participants {
		s, found, err := g.statusOf(ctx, run, i)
		if err != nil {
			logger.Warn("read load checkpoint failed; re-checking next round", zap.String("of", i), zap.Error(err))
			return
		}
		switch {
		case found && s.Done:
			sts = append(sts, s)
		case alive[i]:
			complete = false
		case found:
			sts, lost = append(sts, s), append(lost, i)
		default:
			missing = append(missing, i)
		}
		if !(found && s.Done) && !alive[i] && !p.Stopped {
			// Ranges a dead instance still owns: nobody produced them
			// after its last checkpoint.
			uncovered += dueBetween(resumeFrom(p.piecesOf(i), s.Lanes), p.Cmd.Workload.Sensors, time.Duration(p.PeriodNs), p.Seed, p.duration())
		}
	}
	deadline := p.end().Add(g.cfg.FlushTimeout + g.cfg.DeliveryTimeout + 2*g.cfg.MemberTTL + 5*time.Second)
	timedOut := now.After(deadline)
	if !complete && !timedOut {
		return
	}
	g.stopSampler(run, true) // the last sample sees every record delivered
	fin := summarize(account{plan: p, statuses: sts, missing: missing, lost: lost, uncovered: uncovered, timedOut: !complete})
	if err := g.bus.Publish(ctx, fin, finishedID(run)); err != nil {
		logger.Warn("publish load finished failed; retrying", zap.Error(err))
		return
	}
	np := *p
	np.Finished = true
	b, _ := json.Marshal(np)
	if _, err := g.runs.Update(ctx, planKey(run), b, e.rev); err != nil {
		logger.Info("plan changed meanwhile; re-checking next round", zap.Error(err))
		return
	}
	g.mu.Lock()
	delete(g.plans, run)
	g.mu.Unlock()
	for _, i := range p.Participants {
		_ = g.runs.Purge(ctx, statusKey(run, i))
	}
	logger.Info("load finished", zap.Int64("records_sent", fin.RecordsSent), zap.Int64("records_delivered", fin.RecordsDelivered),
		zap.Int64("errors", fin.Errors), zap.Int64("records_missed", fin.RecordsMissed), zap.Int64("records_backfilled", fin.RecordsBackfilled),
		zap.Int("takeovers", fin.Takeovers), zap.Int("restarts", fin.Restarts),
		zap.Bool("failed", fin.Failed), zap.String("reason", fin.Reason), zap.Strings("instances", p.Participants))
}

// statusOf reads an instance's checkpoint of a run.
func (g *Generator) statusOf(ctx context.Context, run, instance string) (status, bool, error) {
	ent, err := g.runs.Get(ctx, statusKey(run, instance))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return status{}, false, nil
	}
	if err != nil {
		return status{}, false, err
	}
	var s status
	if err := json.Unmarshal(ent.Value(), &s); err != nil {
		return status{}, false, nil // unreadable: as if it never reported
	}
	return s, true, nil
}

// takeOver hands the ranges of the plan's dead instances to the live
// participants (or, when none is left, to any live instance), each piece
// from the dead instance's last acked watermark for it, so the heirs
// back-fill what it left.
func (g *Generator) takeOver(ctx context.Context, e planEntry, alive map[string]bool, logger *zap.Logger) {
	p, run := e.p, e.p.Cmd.RunID
	var heirs, dead []string
	for _, i := range p.Participants {
		if alive[i] {
			heirs = append(heirs, i)
		}
	}
	if len(heirs) == 0 {
		heirs = sortedKeys(alive)
	}
	if len(heirs) == 0 {
		return
	}
	for _, o := range p.Ranges {
		if !alive[o.Instance] && !slices.Contains(dead, o.Instance) {
			dead = append(dead, o.Instance)
		}
	}
	if len(dead) == 0 {
		return
	}
	ckpts := map[string]status{}
	for _, d := range dead {
		s, _, err := g.statusOf(ctx, run, d)
		if err != nil {
			logger.Warn("read checkpoint of a dead instance failed; re-checking next round", zap.String("of", d), zap.Error(err))
			return
		}
		ckpts[d] = s
	}
	nr := reassign(p.Ranges, func(i string) bool { return alive[i] }, heirs, func(o owned) []piece {
		return resumeFrom([]piece{{o.Range, time.Duration(o.FromNs)}}, ckpts[o.Instance].Lanes)
	})
	if nr == nil {
		return
	}
	if err := checkCover(nr, p.Cmd.Workload.Sensors); err != nil {
		logger.Error("range reassignment is inconsistent; keeping the plan", zap.Error(err))
		return
	}
	np := *p
	np.Ranges, np.Epoch, np.Takeovers = nr, p.Epoch+1, p.Takeovers+len(dead)
	np.Participants = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(p.Participants), heirs...))))
	b, _ := json.Marshal(np)
	if _, err := g.runs.Update(ctx, planKey(run), b, e.rev); err != nil {
		logger.Info("plan changed meanwhile; re-checking next round", zap.Error(err))
		return
	}
	g.m.takeovers.Inc()
	from := map[string]time.Duration{}
	for _, d := range dead {
		for _, l := range ckpts[d].Lanes {
			from[d] = max(from[d], time.Duration(l.AckedNs))
		}
	}
	logger.Warn("key ranges taken over", zap.Strings("dead", dead), zap.Strings("heirs", heirs), zap.Int("epoch", np.Epoch),
		zap.Any("acked_watermarks", from))
}

// sampling is a running Kafka-signal sampler.
type sampling struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// ensureSampler samples the run's Kafka signals from now until the load's
// records are all delivered (stopSampler), while this instance leads.
func (g *Generator) ensureSampler(ctx context.Context, p *plan) {
	if g.sink == nil || !g.cfg.RecordKafkaSignals {
		return
	}
	run := p.Cmd.RunID
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.samplers[run]; ok {
		return
	}
	// Bounded even if no summary ever comes.
	sctx, cancel := context.WithDeadline(ctx, p.end().Add(g.cfg.FlushTimeout+g.cfg.DeliveryTimeout))
	s := &sampling{cancel: cancel, done: make(chan struct{})}
	g.samplers[run] = s
	go func() {
		defer func() {
			cancel()
			g.mu.Lock()
			if g.samplers[run] == s {
				delete(g.samplers, run)
			}
			g.mu.Unlock()
			close(s.done)
		}()
		cl, err := kgo.NewClient(kgo.SeedBrokers(p.Cmd.Kafka.Brokers...))
		if err != nil {
			g.logger.Warn("kafka client for signals failed", zap.String("run_id", run), zap.Error(err))
			return
		}
		defer cl.Close()
		smp := kafkasignals.NewSampler(kadm.NewClient(cl), g.sink, g.logger, g.clock.Now)
		smp.Run(sctx, kafkasignals.Target{ExperimentID: p.Cmd.ExperimentID, RunID: run, InputTopic: p.Cmd.Kafka.InputTopic,
			OutputTopic: p.Cmd.Kafka.OutputTopic, Group: "uc3-" + run}, g.cfg.SignalInterval)
	}()
}

// stopSampler ends a run's sampler after one final sample; wait waits for
// that sample to be stored.
func (g *Generator) stopSampler(run string, wait bool) {
	g.mu.Lock()
	s, ok := g.samplers[run]
	g.mu.Unlock()
	if !ok {
		return
	}
	s.cancel()
	if wait {
		<-s.done
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
