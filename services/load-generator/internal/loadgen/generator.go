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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/store"
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

	view    *membership
	beatErr atomic.Pointer[string] // the last heartbeat's error; nil after a success
	cons    *bus.Consumer          // load commands

	// members and runs are the bus's handles of the buckets (opened by Run
	// before anything uses them): the bus keeps them across NATS restarts.
	members, runs jetstream.KeyValue

	reconnects atomic.Uint64 // NATS reconnects seen
	started    atomic.Bool   // Run has opened everything
	closing    atomic.Bool   // Run is shutting down

	mu       sync.Mutex
	jobs     map[string]*job      // run id → this instance's job, running or done
	plans    map[string]planEntry // unfinished plans seen
	samplers map[string]*sampling
	poke     chan struct{}
}

type planEntry struct {
	p   *plan
	rev uint64
	// lost: the plan vanished with its bucket (NATS re-created it empty);
	// the leader writes this copy back.
	lost bool
}

type metrics struct {
	sent, failed, takeovers prometheus.Counter
	rate, members           prometheus.Gauge
	assigned, backlog       prometheus.Gauge
	held                    prometheus.GaugeFunc
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
	g.m.held = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "greenflow_loadgen_shares_held",
		Help: "Shares of loads this instance keeps in memory: producing, or done and waiting for the load's summary."},
		func() float64 {
			g.mu.Lock()
			defer g.mu.Unlock()
			return float64(len(g.jobs))
		})
	g.view = newMembership(cfg.Instance, cfg.MemberTTL, d.Clock.Now, g.logger)
	// Built here, without I/O, so that the bus reports it not ready until
	// Run has it consuming; once consuming, the bus keeps it alive across
	// NATS restarts.
	g.cons = d.Bus.NewConsumer(bus.ConsumerLoadGenerator, g.handle, bus.OnDeadLetter(g.onDeadLetter))
	if d.Registry != nil {
		for _, c := range []prometheus.Collector{g.m.sent, g.m.failed, g.m.rate, g.m.assigned, g.m.backlog, g.m.members, g.m.takeovers, g.m.held} {
			if err := d.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register load-generator metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Run joins the load-generator membership and consumes load commands until
// ctx ends; then it stops its running loads (their ranges are taken over by
// the other instances from their last checkpoints), reports them, and leaves.
func (g *Generator) Run(ctx context.Context) error {
	g.reconnects.Store(g.bus.Conn().Stats().Reconnects)
	if err := g.open(ctx); err != nil {
		return err
	}
	if err := g.heartbeat(ctx); err != nil {
		return fmt.Errorf("join load-generator membership: %w", err)
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	// The bus's watches go on across NATS restarts (they start over after
	// a reconnect) until bg ends.
	g.view.start()
	members, err := g.members.WatchAll(bg)
	if err != nil {
		return fmt.Errorf("watch kv bucket %s: %w", BucketMembers, err)
	}
	plans, err := g.runs.Watch(bg, "plan.>")
	if err != nil {
		return fmt.Errorf("watch plans in kv bucket %s: %w", BucketRuns, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { g.heartbeats(bg) })
	wg.Go(func() {
		for e := range members.Updates() {
			g.view.apply(e)
		}
	})
	wg.Go(func() {
		for e := range plans.Updates() {
			if e != nil {
				g.onPlan(bg, e)
			}
		}
	})
	wg.Go(func() { g.lead(bg) })
	g.started.Store(true)

	err = g.cons.Run(ctx)

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
		g.logger.Warn("leave membership failed; the others see the heartbeat age instead", zap.Error(err))
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

// onDeadLetter answers a load.start the consumer dead-lettered (it failed
// its schema, could not be decoded, or ran out of deliveries) with a failed
// load.finished for its run, so the scheduler does not wait out its grace
// period for an answer that cannot come. Its message id is the run's
// load.finished id: when accept already answered, this one is dropped.
func (g *Generator) onDeadLetter(ctx context.Context, h nats.Header, reason string) {
	if events.Type(h.Get(bus.HeaderType)) != events.TypeLoadStart {
		return
	}
	run, exp := h.Get(bus.HeaderRun), h.Get(bus.HeaderExperiment)
	logger := g.logger.With(zap.String("run_id", run), zap.String("experiment_id", exp))
	if run == "" || exp == "" {
		logger.Error("dead-lettered load.start names no run; nobody can be told", zap.String("reason", reason))
		return
	}
	now := g.clock.Now().UnixMilli()
	fin := events.LoadFinished{ExperimentID: exp, RunID: run, Instance: g.cfg.Instance, StartMs: now, EndMs: now, Failed: true,
		Reason: "load.start could not be processed: " + reason}
	if err := g.bus.Publish(ctx, fin, finishedID(run)); err != nil {
		logger.Error("answer a dead-lettered load.start failed", zap.Error(err))
		return
	}
	logger.Warn("dead-lettered load.start answered with a failed load.finished", zap.String("reason", reason))
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
	} else if g.planLost(m.RunID) {
		return errPlanLost(m.RunID) // accepted before; a new plan would load it twice
	}
	acceptedAt := g.clock.Now()
	baseline, baselineKnown, err := probeTopic(ctx, m.Kafka.Brokers, m.Kafka.InputTopic)
	if err != nil {
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
	if !g.view.isSynced() {
		return errors.New("membership view not synced yet")
	}
	alive, _ := g.view.view()
	alive[g.cfg.Instance] = true
	names := sortedKeys(alive)
	p := plan{Cmd: *m, StartMs: g.clock.Now().Add(g.cfg.StartDelay).UnixMilli(), PeriodNs: int64(period(m.Workload)), Seed: rand.Uint64(),
		SchemaID: schemaID, Ranges: split(0, m.Workload.Sensors, names), Participants: names, Coordinator: g.cfg.Instance,
		BaselineHWM: baseline, BaselineKnown: baselineKnown}
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
	if baselineKnown && g.sink != nil && g.cfg.RecordKafkaSignals {
		// The reading just taken starts the run's high-water mark series
		// before the load does.
		pt := kafkasignals.InputPoint(kafkasignals.Target{ExperimentID: m.ExperimentID, RunID: m.RunID, InputTopic: m.Kafka.InputTopic},
			acceptedAt.UnixMilli(), baseline)
		if err := g.sink.InsertRunMetrics(ctx, []store.RunMetric{pt}); err != nil {
			g.logger.Warn("store the input high-water mark at accept failed", zap.String("run_id", m.RunID), zap.Error(err))
		}
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
			if g.planLost(run) {
				return errPlanLost(run)
			}
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

// probeTopic fails when no seed broker answers within 10 s; otherwise it
// returns the input topic's high-water marks summed (0 for a topic not
// created yet), the baseline for what the load adds to it. known is false
// when they could not be read.
func probeTopic(ctx context.Context, brokers []string, topic string) (baseline int64, known bool, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, false, fmt.Errorf("kafka client for %v: %w", brokers, err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		return 0, false, fmt.Errorf("kafka brokers %v unreachable: %w", brokers, err)
	}
	n, err := kafkasignals.HighWatermark(pctx, kadm.NewClient(cl), topic)
	switch {
	case errors.Is(err, kafkasignals.ErrUnknownTopic):
		return 0, true, nil
	case err != nil:
		return 0, false, nil
	}
	return n, true, nil
}

// planLost reports whether run's plan vanished with its bucket and is
// still to be written back (by the leader, from its copy).
func (g *Generator) planLost(run string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.plans[run].lost
}

// errPlanLost retries a command for a run whose plan is being written back
// (the consumer's back-off gives the leader a poll or two).
func errPlanLost(run string) error {
	return fmt.Errorf("plan of run %s was lost with its kv bucket and is being written back; retrying", run)
}

// onPlan follows the plans: it starts, re-shares and stops this instance's
// jobs accordingly.
func (g *Generator) onPlan(ctx context.Context, e jetstream.KeyValueEntry) {
	run := e.Key()[len("plan."):]
	if e.Operation() != jetstream.KeyValuePut {
		g.mu.Lock()
		pe, known := g.plans[run]
		if known && bus.KeyLost(e) {
			// Nobody deleted it: NATS lost the bucket and the bus declared
			// it again, empty. The load goes on; the leader writes the plan
			// back from its copy (this one, should it be this instance).
			pe.lost = true
			g.plans[run] = pe
			g.mu.Unlock()
			g.logger.Warn("load plan lost with its kv bucket; the leader writes it back", zap.String("run_id", run))
			g.pokeLeader()
			return
		}
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
		g.plans[run] = planEntry{p: &p, rev: e.Revision()}
	}
	j := g.jobs[run]
	g.mu.Unlock()
	switch {
	case j != nil && p.Finished:
		// The load is summed up: nothing of this share is needed any more
		// (its key table and counters can be large), and a finished plan
		// never starts a job again.
		j.cancel()
		go g.forgetJob(run, j)
	case j != nil && p.Stopped:
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

// forgetJob drops a finished job once it has stopped.
func (g *Generator) forgetJob(run string, j *job) {
	<-j.done
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.jobs[run] == j {
		delete(g.jobs, run)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
