// Package provisioner deploys and removes each run's system under test and
// its Kafka topics, and reports the measurement targets.
//
// What it knows of a run lives in the run's record (package state, a KV
// bucket), not in this process: a provision first creates the record (the
// lock that keeps two instances from starting one run), a teardown command
// only records that the teardown is wanted, and a reconciler — in every
// instance — carries wanted teardowns out, with back-off, until the system
// under test and the topics are gone, watches running runs for crashes,
// and removes what belongs to runs that are over or unknown. Any instance
// can therefore tear down any run, and a restarted one carries on.
package provisioner

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Deps are the provisioner's collaborators.
type Deps struct {
	// Bus carries commands, run states and reports; required.
	Bus *bus.Bus
	// Store holds the runs' records (shared with the backends); required.
	Store *state.Store
	// Backends by name (local, kubernetes); Run closes those with a Close
	// when it returns.
	Backends map[string]Backend
	Logger   *zap.Logger
	// Registry registers the provisioner's metrics (nil: not registered).
	Registry prometheus.Registerer
	// Clock times leases, back-offs and the reconciler (default: the real
	// clock).
	Clock clock.WithTicker
	// Kafka authenticates its Kafka clients (topics): SASL; nil: none.
	Kafka []kgo.Opt
}

// Provisioner deploys and removes runs (see the package comment).
type Provisioner struct {
	cfg      Config
	bus      *bus.Bus
	store    *state.Store
	backends map[string]Backend
	logger   *zap.Logger
	kafka    []kgo.Opt // of its Kafka clients: the credentials
	clock    clock.WithTicker
	kick     chan struct{}
	self     procfs.Incarnation // this process, read by Init

	// The durable consumers of commands and of run states. The bus keeps
	// them (and the record bucket and its watch) across NATS restarts and
	// reports them in its Check; the provisioner adds no recovery of its own.
	commands, states *bus.Consumer

	// The record watch and the reconciler's view of it: opened and loaded
	// by Init, then the reconciler's alone.
	watch     jetstream.KeyWatcher
	stopWatch context.CancelFunc
	view      *view

	mu       sync.Mutex
	admins   map[string]*kadm.Client
	inflight map[string]bool // record keys with work of the reconciler running here
	workers  sync.WaitGroup  // that work (teardown attempts, sweeps, lease renewals)

	provisioned *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	attempts    *prometheus.CounterVec
	removed     *prometheus.CounterVec
	updates     prometheus.Counter // record updates the reconciler took
	passes      prometheus.Counter // reconciler passes over every record
}

// New builds the provisioner; no I/O.
func New(cfg Config, d Deps) (*Provisioner, error) {
	err := cfg.Validate()
	if d.Bus == nil || d.Store == nil {
		err = errors.Join(err, errors.New("provisioner: Deps.Bus and Deps.Store are required"))
	}
	if err != nil {
		return nil, err
	}
	d.Logger, d.Clock = cmp.Or(d.Logger, zap.NewNop()), cmp.Or[clock.WithTicker](d.Clock, clock.RealClock{})
	p := &Provisioner{cfg: cfg, bus: d.Bus, store: d.Store, backends: d.Backends, logger: d.Logger.With(zap.String("component", "provisioner")), kafka: d.Kafka,
		clock: d.Clock, kick: make(chan struct{}, 1), admins: map[string]*kadm.Client{}, inflight: map[string]bool{},
		provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_provisioner_operations_total",
			Help: "Provision and teardown operations, by backend, operation and outcome."}, []string{"backend", "operation", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "greenflow_provisioner_operation_seconds",
			Help:    "Time from command to result of provisions (topics, apply, readiness) and teardowns, by backend and operation.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"backend", "operation"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_provisioner_teardown_attempts_total",
			Help: "Teardown attempts, by backend and outcome (done, incomplete)."}, []string{"backend", "outcome"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_provisioner_leftovers_removed_total",
			Help: "What the reconciler removed of runs that are over or unknown, by backend, kind (process, namespace, topics) and why (final, unknown, torn_down)."},
			[]string{"backend", "kind", "why"}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_provisioner_record_updates_total",
			Help: "Updates of the run records this instance looks after that the reconciler took."}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "greenflow_provisioner_reconcile_passes_total",
			Help: "Reconciler passes over every record: one per tick, plus at most one per tick while record updates arrive, plus one per finished piece of work."}),
	}
	if err := service.Register(d.Registry, "provisioner", p.provisioned, p.duration, p.attempts, p.removed, p.updates, p.passes); err != nil {
		return nil, err
	}
	p.commands = d.Bus.NewConsumer(bus.ConsumerProvisioner, p.handler(), bus.OnDeadLetter(p.answerDeadLetter))
	p.states = d.Bus.NewConsumer(bus.ConsumerProvisionerStates, bus.Router("provisioner-states", bus.On(p.onState)))
	return p, nil
}

// Backend returns the backend of that name.
func (p *Provisioner) Backend(name string) (Backend, bool) {
	b, ok := p.backends[name]
	return b, ok
}

// Init opens the records, tells the backends that mark what they create
// the platform id, and loads every record this instance looks after into
// the reconciler's view through a watch that goes on in Run. The
// provisioner is ready once Init has returned (service.Initializer): a
// teardown it handles before would not know runs whose records it has not
// read yet.
func (p *Provisioner) Init(ctx context.Context) error {
	p.self = procfs.Default.Self()
	if err := p.store.Open(ctx); err != nil {
		return err
	}
	for _, be := range p.backends {
		if pu, ok := be.(PlatformUser); ok {
			pu.SetPlatform(p.store.Platform())
		}
	}
	// The watch outlives Init's context: Run stops it.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	w, err := p.store.Watch(wctx, p.filters()...)
	if err != nil {
		stop()
		return err
	}
	v := newView()
	for {
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case u, ok := <-w.Updates():
			if !ok {
				stop()
				return errors.New("provisioner record watch ended before it delivered the records")
			}
			if u != nil {
				p.take(ctx, v, u)
				continue
			}
		}
		p.watch, p.stopWatch, p.view = w, stop, v
		p.poke() // a first pass at once
		return nil
	}
}

// Run consumes provision and teardown commands and run states and
// reconciles (after Init, which it does itself when not done yet), until
// ctx ends; a part that cannot run stops the others and the service. When
// it returns, the work it started has ended and its backends are closed.
func (p *Provisioner) Run(ctx context.Context) error {
	if p.view == nil {
		if err := p.Init(ctx); err != nil {
			return err
		}
	}
	defer func() {
		p.stopWatch()
		p.workers.Wait()
		for _, be := range p.backends {
			if c, ok := be.(closer); ok {
				c.Close()
			}
		}
		p.closeAdmins()
	}()
	var g service.Group
	g.Add("commands", p.commands)
	g.Add("run states", p.states)
	g.Add("reconciler", service.Func(p.reconcile))
	return g.Run(ctx)
}

// handler runs one command. A provision may wait minutes for readiness on a
// cluster; the bus keeps the message ours meanwhile (a handler that runs
// longer than a third of the ack wait extends it), so it is not redelivered
// mid-way, while a provisioner that died leaves it to another within the
// ack wait.
func (p *Provisioner) handler() bus.Handler {
	return bus.Router("provisioner", bus.On(p.provision), bus.On(p.teardown))
}

// answerDeadLetter answers a command that cannot be processed, so the run
// does not wait out a timeout for a reply that cannot come.
func (p *Provisioner) answerDeadLetter(ctx context.Context, h nats.Header, reason string) {
	exp, run := h.Get(bus.HeaderExperiment), h.Get(bus.HeaderRun)
	if run == "" {
		return
	}
	var err error
	switch events.Type(h.Get(bus.HeaderType)) {
	case events.TypeRunProvision:
		// A command that kept failing (this service's infrastructure) or
		// whose deliveries were spent by provisioners that died holding it
		// is one a retry of the run may get past; an undecodable or
		// rejected command will not be fixed by one.
		transient := bus.RetryMayHelp(reason)
		err = p.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: exp, RunID: run, TsMs: p.clock.Now().UnixMilli(), Transient: transient,
			Reason: "the provision command could not be processed: " + reason}, "provision-failed:"+run)
	case events.TypeRunTeardown:
		err = p.bus.Publish(ctx, events.RunTornDown{ExperimentID: exp, RunID: run, Lost: true, TsMs: p.clock.Now().UnixMilli(),
			Reason: "the teardown command could not be processed: " + reason + "; the system under test may still be running"}, "torn-down:"+run)
	}
	if err != nil {
		p.logger.Error("answer a dead-lettered command failed", zap.String("run_id", run), zap.Error(err))
	}
}

// onState records runs the scheduler has ended: whatever of them is left
// is removed by the reconciler, even if their teardown command was lost. A
// run that ended before it started (cancelled or failed while pending) had
// no command sent, so nothing of it can exist or arrive late: it gets no
// mark (a cancelled sweep's marks filled the bucket, and then no run could
// be provisioned).
func (p *Provisioner) onState(ctx context.Context, m *events.RunState) error {
	if !events.RunFinal(m.State) || m.NeverStarted {
		return nil
	}
	if err := p.store.MarkFinal(ctx, m.RunID, m.State); err != nil {
		return err
	}
	p.poke()
	return nil
}

// poke makes the reconciler look now.
func (p *Provisioner) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Provisioner) observe(backend, operation string, start time.Time) {
	p.duration.WithLabelValues(backend, operation).Observe(p.clock.Since(start).Seconds())
}

// backoff is the delay after the n-th failed attempt.
func (p *Provisioner) backoff(n int) time.Duration {
	d := p.cfg.RetryBase
	for i := 1; i < n && d < p.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.cfg.RetryMax)
}
