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
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Provisioner is the provisioner service.
type Provisioner struct {
	cfg      Config
	bus      *bus.Bus
	store    *state.Store
	backends map[string]Backend
	logger   *zap.Logger
	now      func() time.Time
	kick     chan struct{}
	self     procfs.Incarnation // this process, read when Run starts

	// The durable consumers of commands and of run states. The bus keeps
	// them (and the record bucket and its watch) across NATS restarts and
	// reports them in its Check; the provisioner adds no recovery of its own.
	commands, states *bus.Consumer

	mu       sync.Mutex
	admins   map[string]*kadm.Client
	inflight map[string]bool // record keys with a teardown attempt running here
	started  bool            // the records are open
	synced   bool            // the reconciler's view holds every record
	workers  sync.WaitGroup  // teardown attempts and other reconciler work

	provisioned *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	attempts    *prometheus.CounterVec
	removed     *prometheus.CounterVec
}

// New builds the provisioner; no I/O.
func New(cfg Config, b *bus.Bus, store *state.Store, backends map[string]Backend, logger *zap.Logger, reg prometheus.Registerer) (*Provisioner, error) {
	cfg.defaults()
	p := &Provisioner{cfg: cfg, bus: b, store: store, backends: backends, logger: logger.With(zap.String("component", "provisioner")),
		now: time.Now, kick: make(chan struct{}, 1), admins: map[string]*kadm.Client{}, inflight: map[string]bool{},
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{p.provisioned, p.duration, p.attempts, p.removed} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register provisioner metrics: %w", err)
			}
		}
	}
	p.commands = b.NewConsumer(bus.ConsumerProvisioner, p.handle, bus.OnDeadLetter(p.answerDeadLetter))
	p.states = b.NewConsumer(bus.ConsumerProvisionerStates, p.onState)
	return p, nil
}

// Backend returns the backend of that name.
func (p *Provisioner) Backend(name string) (Backend, bool) {
	b, ok := p.backends[name]
	return b, ok
}

// Instance is this provisioner's name in records.
func (p *Provisioner) Instance() string { return p.cfg.Instance }

// Run opens the records and their watch, then consumes provision and
// teardown commands and run states and reconciles, until ctx ends. A
// consumer or the watch that cannot start stops the service.
func (p *Provisioner) Run(ctx context.Context) error {
	defer p.closeAdmins()
	p.self = procfs.Default.Self()
	if err := p.store.Open(ctx); err != nil {
		return err
	}
	for _, be := range p.backends {
		if pu, ok := be.(PlatformUser); ok {
			pu.SetPlatform(p.store.Platform())
		}
	}
	w, err := p.store.Watch(ctx, p.filters()...)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- p.commands.Run(ctx) }()
	go func() { errc <- p.states.Run(ctx) }()
	go func() { errc <- p.reconcile(ctx, w) }()
	var first error
	for i := 0; i < 3; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel() // a consumer that cannot run stops the service
		}
	}
	p.workers.Wait()
	return first
}

// Check reports what keeps the provisioner from its work beyond what the
// bus reports: its records not opened, or not all loaded into the
// reconciler's view yet. The connection, the record bucket, the durable
// consumers and the watch across NATS restarts are the bus's, and its
// Check (beside this one on /healthz) says when they are not working. No
// I/O.
func (p *Provisioner) Check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.started:
		return errors.New("provisioner: records not opened yet")
	case !p.synced:
		return errors.New("provisioner: records not loaded yet")
	}
	return nil
}

// handle runs one command. A provision may wait minutes for readiness on a
// cluster; the bus keeps the message ours meanwhile (a handler that runs
// longer than a third of the ack wait extends it), so it is not redelivered
// mid-way, while a provisioner that died leaves it to another within the
// ack wait.
func (p *Provisioner) handle(ctx context.Context, d bus.Delivery) error {
	switch m := d.Msg.(type) {
	case *events.RunProvision:
		return p.provision(ctx, m)
	case *events.RunTeardown:
		return p.teardown(ctx, m)
	}
	return bus.Permanent(fmt.Errorf("provisioner does not handle %T", d.Msg))
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
		// Out of deliveries ("failed N deliveries, …"): what kept failing
		// was this service's infrastructure (NATS KV, a broker), which a
		// retry of the run may get past; an undecodable or rejected command
		// will not be fixed by one.
		transient := strings.HasPrefix(reason, "failed ")
		err = p.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: exp, RunID: run, TsMs: p.now().UnixMilli(), Transient: transient,
			Reason: "the provision command could not be processed: " + reason}, "provision-failed:"+run)
	case events.TypeRunTeardown:
		err = p.bus.Publish(ctx, events.RunTornDown{ExperimentID: exp, RunID: run, Lost: true, TsMs: p.now().UnixMilli(),
			Reason: "the teardown command could not be processed: " + reason + "; the system under test may still be running"}, "torn-down:"+run)
	}
	if err != nil {
		p.logger.Error("answer a dead-lettered command failed", zap.String("run_id", run), zap.Error(err))
	}
}

// finalStates are the run states the scheduler never leaves.
var finalStates = map[string]bool{"done": true, "failed": true, "cancelled": true}

// onState records runs the scheduler has ended: whatever of them is left
// is removed by the reconciler, even if their teardown command was lost.
func (p *Provisioner) onState(ctx context.Context, d bus.Delivery) error {
	m, ok := d.Msg.(*events.RunState)
	if !ok {
		return bus.Permanent(fmt.Errorf("provisioner-states does not handle %T", d.Msg))
	}
	if !finalStates[m.State] {
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
	p.duration.WithLabelValues(backend, operation).Observe(time.Since(start).Seconds())
}

// backoff is the delay after the n-th failed attempt.
func (p *Provisioner) backoff(n int) time.Duration {
	d := p.cfg.RetryBase
	for i := 1; i < n && d < p.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.cfg.RetryMax)
}
