package provisioner_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// recorder keeps every provisioner event published since a minute before
// it started.
type recorder struct{ *testenv.Recorder }

func record(t testing.TB, b *bus.Bus) *recorder {
	return &recorder{testenv.Record(t, b, time.Now().Add(-time.Minute), events.TypeRunProvisioned, events.TypeRunProvisionFailed,
		events.TypeRunTornDown)}
}

// tornDown waits for the run's final run.torn_down (Incomplete false).
func (r *recorder) tornDown(t testing.TB, runID string, within time.Duration) *events.RunTornDown {
	t.Helper()
	var got *events.RunTornDown
	testenv.Eventually(t, within, "run "+runID+" torn down", func() bool {
		for _, m := range r.All(events.TypeRunTornDown, runID) {
			if td := m.(*events.RunTornDown); !td.Incomplete {
				got = td
				return true
			}
		}
		return false
	})
	return got
}

// incomplete returns the run's incomplete teardown reports.
func (r *recorder) incomplete(runID string) []*events.RunTornDown {
	var out []*events.RunTornDown
	for _, m := range r.All(events.TypeRunTornDown, runID) {
		if td := m.(*events.RunTornDown); td.Incomplete {
			out = append(out, td)
		}
	}
	return out
}

// provisioned waits for the run's provisioned report; a failed provision
// fails the test with its reason.
func (r *recorder) provisioned(t testing.TB, runID string, within time.Duration) *events.RunProvisioned {
	t.Helper()
	testenv.Eventually(t, within, "run "+runID+" provisioned", func() bool {
		return r.First(events.TypeRunProvisioned, runID) != nil || r.First(events.TypeRunProvisionFailed, runID) != nil
	})
	if f := r.First(events.TypeRunProvisionFailed, runID); f != nil {
		t.Fatalf("provision failed: %s", f.(*events.RunProvisionFailed).Reason)
	}
	return r.First(events.TypeRunProvisioned, runID).(*events.RunProvisioned)
}

// provisionFailed waits for the run's provision_failed report.
func (r *recorder) provisionFailed(t testing.TB, runID string, within time.Duration) *events.RunProvisionFailed {
	t.Helper()
	testenv.Eventually(t, within, "run "+runID+" failed to provision", func() bool { return r.First(events.TypeRunProvisionFailed, runID) != nil })
	return r.First(events.TypeRunProvisionFailed, runID).(*events.RunProvisionFailed)
}

// world is the infrastructure of a test: embedded NATS JetStream and an
// in-process Kafka cluster.
type world struct {
	nats    string
	brokers []string // the Kafka cluster's
	admin   *kadm.Client
	bus     *bus.Bus // the test's own connection
	rec     *recorder
}

func newWorld(t testing.TB) *world { return newWorldAt(t, testenv.NATS(t)) }

// newWorldAt is a world on the NATS server at url.
func newWorldAt(t testing.TB, url string) *world {
	t.Helper()
	w := &world{nats: url}
	w.brokers = testenv.Kafka(t, 0).ListenAddrs()
	kcl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...))
	require.NoError(t, err)
	t.Cleanup(kcl.Close)
	w.admin = kadm.NewClient(kcl)
	w.bus = testenv.Bus(t, w.nats, "test")
	w.rec = record(t, w.bus)
	return w
}

func (w *world) kafkaFor(runID string) events.Kafka {
	return events.Kafka{Brokers: w.brokers, InputTopic: "input-" + runID, OutputTopic: "output-" + runID, Partitions: 2}
}

// localRun is a local run of a shell script.
func (w *world) localRun(runID, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "exp", RunID: runID, Kafka: w.kafkaFor(runID),
		SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}}}
}

func (w *world) provision(t testing.TB, p events.RunProvision) {
	t.Helper()
	require.NoError(t, w.bus.Publish(context.Background(), p, "provision:"+p.RunID))
}

func (w *world) teardown(t testing.TB, p events.RunProvision, msgID string) {
	t.Helper()
	k := p.Kafka
	require.NoError(t, w.bus.Publish(context.Background(), events.RunTeardown{ExperimentID: p.ExperimentID, RunID: p.RunID, Backend: p.SUT.Backend,
		Kafka: &k}, msgID))
}

// topics counts the run's topics that exist, each with the run's
// partitions (-1 when a topic has another number, or they cannot be read).
func (w *world) topics(p events.RunProvision) int {
	td, err := w.admin.ListTopics(context.Background(), p.Kafka.InputTopic, p.Kafka.OutputTopic)
	if err != nil {
		return -1
	}
	n := 0
	for _, d := range td.Sorted() {
		if d.Err != nil {
			continue
		}
		if len(d.Partitions) != p.Kafka.Partitions {
			return -1
		}
		n++
	}
	return n
}

// consumerPending is the provisioner consumer's count of messages not yet
// acknowledged (as a gauge, for Eventually).
func (w *world) consumerPending(t testing.TB) uint64 {
	t.Helper()
	info, err := w.bus.JetStream().Consumer(context.Background(), bus.StreamLifecycle, bus.ConsumerProvisioner.Durable)
	require.NoError(t, err)
	ci, err := info.Info(context.Background())
	require.NoError(t, err)
	return ci.NumPending + uint64(ci.NumAckPending)
}

// instance is one provisioner, in this process, with its own NATS
// connection, as a separate provisioner process would have.
type instance struct {
	p      *provisioner.Provisioner
	local  *local.Backend // nil without the local backend
	store  *state.Store
	reg    *prometheus.Registry
	health *service.Health // what its /healthz would answer
	stop   func()
}

// options change an instance from the test defaults: short ticks and
// back-offs, and the local backend on node-a.
type options struct {
	node     string
	stateDir string
	core     func(*provisioner.Config)
	local    func(*local.Config)
	noLocal  bool
	// kube configures a kubernetes backend (none when nil) on the cluster
	// rest points at.
	kube *kube.Config
	rest *rest.Config
	// clock is the provisioner's (default: the real one).
	clock clock.WithTicker
}

// start runs a provisioner as svcmain does — in a service.Group, with
// /healthz answering from the group (started: Init done) and the bus — and
// stops it when the test ends.
func (w *world) start(t testing.TB, o options) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := bus.Connect(ctx, w.nats, "provisioner", testenv.Logger(t), nil)
	require.NoError(t, err)
	st, err := state.New(state.Default(), state.Deps{Bus: b})
	require.NoError(t, err)
	inst := &instance{store: st, reg: prometheus.NewRegistry()}
	backends := map[string]provisioner.Backend{}
	if !o.noLocal {
		lcfg := local.Default()
		lcfg.Node, lcfg.StateDir, lcfg.StartupGrace, lcfg.StopTimeout, lcfg.LivenessPoll = "node-a", o.stateDir, 100*time.Millisecond, 2*time.Second,
			50*time.Millisecond
		if o.node != "" {
			lcfg.Node = o.node
		}
		if lcfg.StateDir == "" {
			lcfg.StateDir = t.TempDir()
		}
		if o.local != nil {
			o.local(&lcfg)
		}
		inst.local, err = local.New(lcfg, local.Deps{Store: st, Logger: testenv.Logger(t)})
		require.NoError(t, err)
		backends["local"] = inst.local
	}
	if o.kube != nil {
		kb, err := kube.New(*o.kube, kube.Deps{REST: o.rest, Logger: testenv.Logger(t)})
		require.NoError(t, err)
		backends["kubernetes"] = kb
	}
	ccfg := provisioner.Default()
	ccfg.Tick, ccfg.RetryBase, ccfg.RetryMax, ccfg.TopicTimeout = 50*time.Millisecond, 100*time.Millisecond, time.Second, 3*time.Second
	if o.core != nil {
		o.core(&ccfg)
	}
	inst.p, err = provisioner.New(ccfg, provisioner.Deps{Bus: b, Store: st, Backends: backends, Logger: testenv.Logger(t), Registry: inst.reg,
		Clock: o.clock})
	require.NoError(t, err)
	var g service.Group
	g.Add("provisioner", inst.p)
	inst.health = &service.Health{}
	b.Expect(bus.ExpectedConsumers("provisioner")...)
	inst.health.Add("nats", b)
	inst.health.Add("", &g)
	inst.health.SetReady(true)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	inst.stop = func() {
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
		b.Close()
	}
	t.Cleanup(inst.stop)
	testenv.Eventually(t, 10*time.Second, "provisioner ready", func() bool { return inst.health.Check() == nil })
	return inst
}

// key is the record key of a run of the instance's backend.
func (inst *instance) key(t testing.TB, p events.RunProvision) string {
	t.Helper()
	be, ok := inst.p.Backend(p.SUT.Backend)
	require.True(t, ok, "backend %s", p.SUT.Backend)
	return be.Key(p.RunID)
}

// removed reads greenflow_provisioner_leftovers_removed_total.
func removed(t testing.TB, g prometheus.Gatherer, backend, kind, why string) float64 {
	t.Helper()
	return testenv.CounterValue(t, g, "greenflow_provisioner_leftovers_removed_total", map[string]string{"backend": backend, "kind": kind, "why": why})
}
