package provisioner_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// recorder keeps every provisioner event published since it started.
type recorder struct {
	mu  sync.Mutex
	got []events.Message
}

func record(t *testing.T, b *bus.Bus) *recorder {
	r := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunProvisioned, events.TypeRunProvisionFailed, events.TypeRunTornDown},
			func(d bus.Delivery) {
				r.mu.Lock()
				r.got = append(r.got, d.Msg)
				r.mu.Unlock()
			})
	}()
	return r
}

func (r *recorder) find(typ events.Type, runID string) events.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.got {
		if _, id := m.IDs(); m.MessageType() == typ && id == runID {
			return m
		}
	}
	return nil
}

// all returns the events of one type and run, in order.
func (r *recorder) all(typ events.Type, runID string) []events.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Message
	for _, m := range r.got {
		if _, id := m.IDs(); m.MessageType() == typ && id == runID {
			out = append(out, m)
		}
	}
	return out
}

// tornDown waits for the run's final run.torn_down (Incomplete false).
func (r *recorder) tornDown(t *testing.T, runID string, within time.Duration) *events.RunTornDown {
	t.Helper()
	var got *events.RunTornDown
	testenv.Eventually(t, within, "run "+runID+" torn down", func() bool {
		for _, m := range r.all(events.TypeRunTornDown, runID) {
			if td := m.(*events.RunTornDown); !td.Incomplete {
				got = td
				return true
			}
		}
		return false
	})
	return got
}

func (r *recorder) provisioned(t *testing.T, runID string, within time.Duration) *events.RunProvisioned {
	t.Helper()
	testenv.Eventually(t, within, "run "+runID+" provisioned", func() bool {
		return r.find(events.TypeRunProvisioned, runID) != nil || r.find(events.TypeRunProvisionFailed, runID) != nil
	})
	if f := r.find(events.TypeRunProvisionFailed, runID); f != nil {
		t.Fatalf("provision failed: %s", f.(*events.RunProvisionFailed).Reason)
	}
	return r.find(events.TypeRunProvisioned, runID).(*events.RunProvisioned)
}

// world is the infrastructure of a test: embedded NATS JetStream and an
// in-process Kafka cluster.
type world struct {
	nats  string
	kafka *kfake.Cluster
	admin *kadm.Client
	bus   *bus.Bus // the test's own connection
	rec   *recorder
}

func newWorld(t *testing.T) *world { return newWorldAt(t, testenv.NATS(t)) }

// newWorldAt is a world on the NATS server at url.
func newWorldAt(t *testing.T, url string) *world {
	t.Helper()
	w := &world{nats: url}
	var err error
	w.kafka, err = kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(w.kafka.Close)
	kcl, err := kgo.NewClient(kgo.SeedBrokers(w.kafka.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(kcl.Close)
	w.admin = kadm.NewClient(kcl)
	w.bus, err = bus.Connect(context.Background(), w.nats, "test", zap.NewNop(), nil)
	require.NoError(t, err)
	t.Cleanup(w.bus.Close)
	w.rec = record(t, w.bus)
	return w
}

func (w *world) kafkaFor(runID string) events.Kafka {
	return events.Kafka{Brokers: w.kafka.ListenAddrs(), InputTopic: "input-" + runID, OutputTopic: "output-" + runID, Partitions: 2}
}

// localRun is a local run of a shell script.
func (w *world) localRun(runID, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "exp", RunID: runID, Kafka: w.kafkaFor(runID),
		SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}}}
}

func (w *world) teardown(t *testing.T, p events.RunProvision, msgID string) {
	t.Helper()
	k := p.Kafka
	require.NoError(t, w.bus.Publish(context.Background(), events.RunTeardown{ExperimentID: p.ExperimentID, RunID: p.RunID, Backend: p.SUT.Backend,
		Kafka: &k}, msgID))
}

// topics counts the run's topics that exist.
func (w *world) topics(p events.RunProvision) int {
	td, err := w.admin.ListTopics(context.Background(), p.Kafka.InputTopic, p.Kafka.OutputTopic)
	if err != nil {
		return -1
	}
	n := 0
	for _, d := range td.Sorted() {
		if d.Err == nil {
			n++
		}
	}
	return n
}

// instance is one provisioner, in this process, with its own NATS
// connection, as a separate provisioner process would have.
type instance struct {
	p      *provisioner.Provisioner
	local  *local.Backend
	store  *state.Store
	reg    *prometheus.Registry
	health *service.Health // what its /healthz would answer
	stop   func()
}

// healthOf is the provisioner's /healthz as svcmain wires it: the bus's
// Check (connection, streams and buckets, durable consumers) beside the
// provisioner's own.
func healthOf(b *bus.Bus, p *provisioner.Provisioner) *service.Health {
	h := &service.Health{}
	b.Expect(bus.ExpectedConsumers("provisioner")...)
	h.Add("nats", b)
	h.Add("provisioner", p)
	h.SetReady(true)
	return h
}

type options struct {
	node     string
	stateDir string
	core     func(*provisioner.Config)
	local    func(*local.Config)
}

func (w *world) start(t *testing.T, o options) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := bus.Connect(ctx, w.nats, "provisioner", testenv.Logger(t), nil)
	require.NoError(t, err)
	if o.node == "" {
		o.node = "node-a"
	}
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	st := state.New(b, "")
	lcfg := local.Config{Node: o.node, StateDir: o.stateDir, StartupGrace: 100 * time.Millisecond, StopTimeout: 2 * time.Second,
		LivenessPoll: 50 * time.Millisecond}
	if o.local != nil {
		o.local(&lcfg)
	}
	lb := local.New(lcfg, st, testenv.Logger(t))
	ccfg := provisioner.Config{Tick: 50 * time.Millisecond, RetryBase: 100 * time.Millisecond, RetryMax: time.Second, TopicTimeout: 3 * time.Second}
	if o.core != nil {
		o.core(&ccfg)
	}
	reg := prometheus.NewRegistry()
	var p *provisioner.Provisioner
	lb.OnCrash(func(run, reason string) { p.Crashed("local", run, reason) })
	p, err = provisioner.New(ccfg, b, st, map[string]provisioner.Backend{"local": lb}, testenv.Logger(t), reg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("provisioner did not stop")
		}
		lb.Close()
		b.Close()
	}
	t.Cleanup(stop)
	health := healthOf(b, p)
	testenv.Eventually(t, 10*time.Second, "provisioner ready", func() bool { return health.Check() == nil })
	return &instance{p: p, local: lb, store: st, reg: reg, health: health, stop: stop}
}

func (w *world) provision(t *testing.T, p events.RunProvision) {
	t.Helper()
	require.NoError(t, w.bus.Publish(context.Background(), p, "provision:"+p.RunID))
}

func pidsOf(t *testing.T, st *state.Store, key string) string {
	e, err := st.Get(context.Background(), key)
	require.NoError(t, err)
	return fmt.Sprintf("%+v", e.Rec.Process)
}
