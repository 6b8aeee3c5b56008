// Package provisioner deploys and removes each run's system under test and
// its Kafka topics, and reports the measurement targets.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// Backend deploys a run's system under test.
type Backend interface {
	// Provision deploys the run and returns its targets; repeating it for a
	// deployed run returns the same targets.
	Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error)
	// Teardown removes the run; crashed reports that it had already died.
	Teardown(ctx context.Context, runID string) (crashed bool, reason string, err error)
}

// inProgressEvery is how often a long handler extends its ack deadline
// (the consumer's AckWait is 60 s).
const inProgressEvery = 15 * time.Second

// TopicManager is a backend that creates and deletes a run's Kafka topics
// itself (Strimzi KafkaTopic resources) when ManagesTopics says so;
// otherwise the provisioner uses the Kafka admin API.
type TopicManager interface {
	ManagesTopics() (bool, error)
	CreateTopics(ctx context.Context, p events.RunProvision) error
	DeleteTopics(ctx context.Context, runID string) error
}

// Provisioner is the provisioner service.
type Provisioner struct {
	bus      *bus.Bus
	backends map[string]Backend
	logger   *zap.Logger

	mu      sync.Mutex
	admins  map[string]*kadm.Client
	topics  map[string][]string // run → topics created
	brokers map[string][]string

	provisioned *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

// New builds the provisioner; no I/O.
func New(b *bus.Bus, backends map[string]Backend, logger *zap.Logger, reg prometheus.Registerer) (*Provisioner, error) {
	p := &Provisioner{bus: b, backends: backends, logger: logger.With(zap.String("component", "provisioner")),
		admins: map[string]*kadm.Client{}, topics: map[string][]string{}, brokers: map[string][]string{},
		provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_provisioner_operations_total",
			Help: "Provision and teardown operations, by backend, operation and outcome."}, []string{"backend", "operation", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "greenflow_provisioner_operation_seconds",
			Help:    "Time from command to result of provisions (topics, apply, readiness) and teardowns, by backend and operation.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"backend", "operation"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{p.provisioned, p.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register provisioner metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Backend returns the backend of that name.
func (p *Provisioner) Backend(name string) (Backend, bool) {
	b, ok := p.backends[name]
	return b, ok
}

// Run consumes provision and teardown commands until ctx ends.
func (p *Provisioner) Run(ctx context.Context) error {
	defer p.closeAdmins()
	return p.bus.Consume(ctx, bus.ConsumerProvisioner, p.handle)
}

// Crashed is called by a backend when a run's process died on its own: the
// run is cleaned up and reported torn down with the reason.
// kafka names the run's topics when the backend kept them (this provisioner
// may have restarted since it created them); nil: as remembered.
func (p *Provisioner) Crashed(ctx context.Context, backend, experimentID, runID, reason string, kafka *events.Kafka) {
	p.logger.Error("system under test exited during the run", zap.String("run_id", runID), zap.String("reason", reason))
	p.remember(runID, kafka)
	if be, ok := p.backends[backend]; ok {
		p.removeTopics(ctx, be, runID)
	}
	if err := p.bus.Publish(ctx, events.RunTornDown{ExperimentID: experimentID, RunID: runID, Crashed: true, Reason: reason,
		TsMs: time.Now().UnixMilli()}, "torn-down:"+runID); err != nil {
		p.logger.Error("publish crash failed", zap.String("run_id", runID), zap.Error(err))
	}
}

func (p *Provisioner) handle(ctx context.Context, d bus.Delivery) error {
	// A provision waits for readiness (minutes on a cluster): keep the
	// message ours meanwhile, so it is not redelivered mid-way.
	if d.InProgress != nil {
		hctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for {
				select {
				case <-hctx.Done():
					return
				case <-time.After(inProgressEvery):
					_ = d.InProgress()
				}
			}
		}()
	}
	switch m := d.Msg.(type) {
	case *events.RunProvision:
		return p.provision(ctx, m)
	case *events.RunTeardown:
		return p.teardown(ctx, m)
	}
	return bus.Permanent(fmt.Errorf("provisioner does not handle %T", d.Msg))
}

func (p *Provisioner) provision(ctx context.Context, m *events.RunProvision) error {
	defer p.observe(m.SUT.Backend, "provision", time.Now())
	be, ok := p.backends[m.SUT.Backend]
	if !ok {
		return p.failProvision(ctx, m, fmt.Errorf("backend %q is not enabled in this provisioner", m.SUT.Backend))
	}
	tm, managed, err := topicManager(be)
	if err != nil {
		return p.failProvision(ctx, m, err)
	}
	if managed {
		err = tm.CreateTopics(ctx, *m)
	} else {
		err = p.createTopics(ctx, m)
	}
	if err == nil {
		var targets []events.Target
		if targets, err = be.Provision(ctx, *m); err == nil {
			p.provisioned.WithLabelValues(m.SUT.Backend, "provision", "ok").Inc()
			return p.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.SUT.Backend,
				Targets: targets, TsMs: time.Now().UnixMilli()}, "provisioned:"+m.RunID)
		}
	}
	if ctx.Err() != nil {
		// Shutting down mid-way: not a failure of the run. The command is
		// redelivered to the next provisioner, which carries on (applying
		// is idempotent).
		return fmt.Errorf("provision of run %s interrupted: %w", m.RunID, err)
	}
	p.removeTopics(ctx, be, m.RunID)
	return p.failProvision(ctx, m, err)
}

func (p *Provisioner) observe(backend, operation string, start time.Time) {
	p.duration.WithLabelValues(backend, operation).Observe(time.Since(start).Seconds())
}

// failProvision reports a failed provision; nothing is left behind.
func (p *Provisioner) failProvision(ctx context.Context, m *events.RunProvision, cause error) error {
	p.provisioned.WithLabelValues(m.SUT.Backend, "provision", "failed").Inc()
	p.logger.Warn("provision failed", zap.String("run_id", m.RunID), zap.Error(cause))
	return p.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Reason: cause.Error(),
		TsMs: time.Now().UnixMilli()}, "provision-failed:"+m.RunID)
}

func (p *Provisioner) teardown(ctx context.Context, m *events.RunTeardown) error {
	be, ok := p.backends[m.Backend]
	if !ok {
		return bus.Permanent(fmt.Errorf("backend %q is not enabled in this provisioner", m.Backend))
	}
	defer p.observe(m.Backend, "teardown", time.Now())
	crashed, reason, err := be.Teardown(ctx, m.RunID)
	if err != nil {
		p.provisioned.WithLabelValues(m.Backend, "teardown", "failed").Inc()
		return fmt.Errorf("tear down run %s: %w", m.RunID, err)
	}
	p.remember(m.RunID, m.Kafka) // known even after a restart of this provisioner
	p.removeTopics(ctx, be, m.RunID)
	p.provisioned.WithLabelValues(m.Backend, "teardown", "ok").Inc()
	return p.bus.Publish(ctx, events.RunTornDown{ExperimentID: m.ExperimentID, RunID: m.RunID, Crashed: crashed, Reason: reason,
		TsMs: time.Now().UnixMilli()}, "torn-down:"+m.RunID)
}

// remember notes a run's topics for deletion, from a command or a backend.
func (p *Provisioner) remember(runID string, k *events.Kafka) {
	if k == nil || len(k.Brokers) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.topics[runID], p.brokers[runID] = []string{k.InputTopic, k.OutputTopic}, k.Brokers
}

func topicManager(be Backend) (TopicManager, bool, error) {
	tm, ok := be.(TopicManager)
	if !ok {
		return nil, false, nil
	}
	managed, err := tm.ManagesTopics()
	return tm, managed, err
}

// removeTopics deletes a run's topics the way they were created.
func (p *Provisioner) removeTopics(ctx context.Context, be Backend, runID string) {
	if tm, managed, _ := topicManager(be); managed {
		if err := tm.DeleteTopics(ctx, runID); err != nil {
			p.logger.Warn("delete topics failed", zap.String("run_id", runID), zap.Error(err))
		}
		return
	}
	p.deleteTopics(ctx, runID)
}

func (p *Provisioner) admin(brokers []string) (*kadm.Client, error) {
	key := strings.Join(brokers, ",")
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.admins[key]; ok {
		return a, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequestTimeoutOverhead(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("kafka client for %s: %w", key, err)
	}
	a := kadm.NewClient(cl)
	p.admins[key] = a
	return a, nil
}

func (p *Provisioner) createTopics(ctx context.Context, m *events.RunProvision) error {
	if len(m.Kafka.Brokers) == 0 {
		return errors.New("no Kafka brokers given")
	}
	a, err := p.admin(m.Kafka.Brokers)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	topics := []string{m.Kafka.InputTopic, m.Kafka.OutputTopic}
	resp, err := a.CreateTopics(cctx, int32(m.Kafka.Partitions), 1, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v on %v: %w", topics, m.Kafka.Brokers, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	p.mu.Lock()
	p.topics[m.RunID] = topics
	p.brokers[m.RunID] = m.Kafka.Brokers
	p.mu.Unlock()
	return nil
}

func (p *Provisioner) deleteTopics(ctx context.Context, runID string) {
	p.mu.Lock()
	topics, brokers := p.topics[runID], p.brokers[runID]
	delete(p.topics, runID)
	delete(p.brokers, runID)
	p.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	a, err := p.admin(brokers)
	if err != nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.DeleteTopics(dctx, topics...); err != nil {
		p.logger.Warn("delete topics failed", zap.String("run_id", runID), zap.Strings("topics", topics), zap.Error(err))
	}
}

func (p *Provisioner) closeAdmins() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, a := range p.admins {
		a.Close()
		delete(p.admins, k)
	}
}
