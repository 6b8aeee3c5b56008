// Package loadgen produces Theodolite UC-3 ActivePowerRecords into Kafka at a
// precise rate for the duration of a run's load phase. Several instances
// share a load: they split the key space into contiguous ranges through
// JetStream KV, take over the range of an instance that dies, and publish
// one load.finished per run summing them all (see plan.go). Each instance
// reports records sent, errors and the achieved rate every second.
//
// Where things are: accept.go takes load commands and writes plans;
// membership.go and kv.go keep the instances' view of each other; job.go
// runs this instance's share of a plan (worker.go, lane.go and pacer.go
// produce it), status.go keeps its checkpoint and publish.go reports its
// progress; lead.go holds the leader's duties (take-overs, summaries —
// account.go) and sampler.go its Kafka signals.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/service"
)

// Deps are the generator's collaborators.
type Deps struct {
	Bus *bus.Bus
	// Store receives Kafka signals (high-water marks, consumer lag) as run
	// metrics; nil disables them.
	Store    kafkasignals.Sink
	Logger   *zap.Logger
	Registry prometheus.Registerer // may be nil
	Clock    clock.WithTicker      // nil: the real clock
	HTTP     *http.Client          // schema registry client; nil: a default with a timeout
	// Kafka authenticates every Kafka client (SASL); nil: none.
	Kafka []kgo.Opt
	// Hooks are for tests: they stand for a slow machine. Nil fields do
	// nothing.
	Hooks Hooks
}

// Hooks let a test make an instance slow where a real machine can be.
type Hooks struct {
	// Prepared runs when an instance has prepared its share of run, before
	// it says so: blocking here is a slow preparation (a large key table).
	Prepared func(run string)
	// Step runs before each pacing step of run with the schedule time
	// elapsed: blocking here stalls sending (a GC pause, a starved CPU).
	Step func(run string, elapsed time.Duration)
}

// Generator is one load-generator instance: it produces its share of each
// run's key space and, while it leads, takes over dead instances' shares
// and sums the load up.
type Generator struct {
	cfg    Config
	bus    *bus.Bus
	sink   kafkasignals.Sink
	logger *zap.Logger
	// base is logger without its component: for the components the
	// generator starts (the Kafka signal sampler), which add their own.
	base  *zap.Logger
	kafka []kgo.Opt // of every Kafka client: its credentials
	clock clock.WithTicker
	hc    *http.Client
	hooks Hooks
	m     metrics

	view    *membership
	beatErr atomic.Pointer[string] // the last heartbeat's error; nil after a success
	cons    *bus.Consumer          // load commands

	// members and runs are the bus's handles of the buckets (opened by Init
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

var (
	_ service.Component   = (*Generator)(nil)
	_ service.Initializer = (*Generator)(nil)
	_ service.Checker     = (*Generator)(nil)
)

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

// Metric names are greenflow_load_generator_<name>.
const (
	metricNamespace = "greenflow"
	metricSubsystem = "load_generator"
)

func newMetrics() metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricNamespace, Subsystem: metricSubsystem, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricNamespace, Subsystem: metricSubsystem, Name: name, Help: help})
	}
	return metrics{
		sent:      counter("records_sent_total", "Records acknowledged by Kafka."),
		failed:    counter("records_failed_total", "Records Kafka did not acknowledge."),
		rate:      gauge("achieved_rate_per_second", "Acknowledged records of the last reported second of schedule."),
		assigned:  gauge("assigned_sensors", "Sensors this instance produces for running loads."),
		backlog:   gauge("backlog_records", "Records due but not produced yet (behind schedule)."),
		members:   gauge("members", "Live load-generator instances this instance sees."),
		takeovers: counter("range_takeovers_total", "Re-assignments of dead instances' key ranges this instance made as leader."),
	}
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
		d.Clock = clock.RealClock{}
	}
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	base := d.Logger.With(zap.String("instance", cfg.Instance))
	g := &Generator{cfg: cfg, bus: d.Bus, sink: d.Store, logger: base.With(zap.String("component", "load-generator")), base: base, kafka: d.Kafka,
		clock: d.Clock, hc: d.HTTP, hooks: d.Hooks, jobs: map[string]*job{}, plans: map[string]planEntry{}, samplers: map[string]*sampling{},
		poke: make(chan struct{}, 1),
		m:    newMetrics(),
	}
	g.m.held = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricNamespace, Subsystem: metricSubsystem, Name: "shares_held",
		Help: "Shares of loads this instance keeps in memory: producing, or done and waiting for the load's summary."},
		func() float64 {
			g.mu.Lock()
			defer g.mu.Unlock()
			return float64(len(g.jobs))
		})
	g.view = newMembership(cfg.Instance, cfg.MemberTTL, d.Clock, g.logger)
	// Built here, without I/O, so that the bus reports it not ready until
	// Run has it consuming; once consuming, the bus keeps it alive across
	// NATS restarts.
	g.cons = d.Bus.NewConsumer(bus.ConsumerLoadGenerator, g.handler(), bus.OnDeadLetter(g.onDeadLetter))
	if d.Registry != nil {
		for _, c := range []prometheus.Collector{g.m.sent, g.m.failed, g.m.rate, g.m.assigned, g.m.backlog, g.m.members, g.m.takeovers, g.m.held} {
			if err := d.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register load-generator metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Init implements service.Initializer: it opens the buckets and joins the
// membership, without which no load can be planned or shared.
func (g *Generator) Init(ctx context.Context) error {
	g.reconnects.Store(g.bus.Conn().Stats().Reconnects)
	if err := g.open(ctx); err != nil {
		return err
	}
	if err := g.heartbeat(ctx); err != nil {
		return fmt.Errorf("join load-generator membership: %w", err)
	}
	return nil
}

// Run follows the membership and the plans and consumes load commands
// until ctx ends; then it stops its running loads (their ranges are taken
// over by the other instances from their last checkpoints), reports them,
// and leaves. It calls Init first unless that was done.
func (g *Generator) Run(ctx context.Context) error {
	if g.members == nil {
		if err := g.Init(ctx); err != nil {
			return err
		}
	}
	// The loops outlive ctx: the jobs stopped at shutdown still report
	// and the leader still sums up, until the instance has left.
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
	var loops service.Group
	loops.Add("heartbeats", service.Func(func(ctx context.Context) error { g.heartbeats(ctx); return nil }))
	loops.Add("membership watch", service.Func(func(context.Context) error {
		for e := range members.Updates() {
			g.view.apply(e)
		}
		return nil
	}))
	loops.Add("plan watch", service.Func(func(ctx context.Context) error {
		for e := range plans.Updates() {
			if e != nil {
				g.onPlan(ctx, e)
			}
		}
		return nil
	}))
	loops.Add("leader", service.Func(func(ctx context.Context) error { g.lead(ctx); return nil }))
	loops.Add("commands", service.Func(func(loopsCtx context.Context) error {
		// Commands stop with ctx, or when another loop ended early.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(loopsCtx, cancel)()
		err := g.cons.Run(cctx)
		g.stopJobs()
		g.leave(bg)
		stopBG()
		return err
	}))
	g.started.Store(true)
	err = loops.Run(bg)
	g.stopSamplers()
	return err
}

// stopJobs stops this instance's jobs and waits until each has reported;
// no job starts afterwards.
func (g *Generator) stopJobs() {
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
}

// leave deletes this instance's membership entry, so that the others need
// not wait for its heartbeat to age.
func (g *Generator) leave(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := g.members.Delete(lctx, g.cfg.Instance); err != nil {
		g.logger.Warn("leave membership failed; the others see the heartbeat age instead", zap.Error(err))
	}
}

// kafkaClient is a client of brokers with the generator's credentials.
func (g *Generator) kafkaClient(brokers []string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, g.kafka...), opts...)...)
}
