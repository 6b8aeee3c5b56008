//go:build envtest

package provisioner_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Real parts: embedded NATS JetStream, kfake Kafka, and a real
// kube-apiserver + etcd (envtest) where kubetest.Kubelet plays the nodes.
func TestMain(m *testing.M) { kubetest.Main(m) }

// startKube runs a provisioner with the kubernetes backend (its own NATS
// connection, as a separate process would have).
func (w *world) startKube(t *testing.T, cfg kube.Config, core func(*provisioner.Config)) (*kube.Backend, *prometheus.Registry, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := bus.Connect(ctx, w.nats, "provisioner", zap.NewNop(), nil)
	require.NoError(t, err)
	kb, err := kube.New(kubetest.Admin, cfg, testenv.Logger(t))
	require.NoError(t, err)
	st := state.New(b, "")
	ccfg := provisioner.Config{Tick: 50 * time.Millisecond, RetryBase: 200 * time.Millisecond, RetryMax: 2 * time.Second, TopicTimeout: 3 * time.Second}
	if core != nil {
		core(&ccfg)
	}
	reg := prometheus.NewRegistry()
	var p *provisioner.Provisioner
	kb.OnCrash(func(_, run, reason string, _ *events.Kafka) { p.Crashed("kubernetes", run, reason) })
	p, err = provisioner.New(ccfg, b, st, map[string]provisioner.Backend{"kubernetes": kb}, testenv.Logger(t), reg)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		kb.Close()
		b.Close()
	}
	t.Cleanup(stop)
	testenv.Eventually(t, 10*time.Second, "provisioner ready", func() bool { return p.Check() == nil })
	return kb, reg, stop
}

func kubeCfg() kube.Config {
	return kube.Config{ReadyTimeout: 20 * time.Second, UnschedulableGrace: 2 * time.Second, TeardownTimeout: time.Second,
		PollInterval: 100 * time.Millisecond, CrashPoll: 100 * time.Millisecond}
}

func TestKubernetesRunsOverTheBusWithTopicsAndRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t)
	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, kubetest.Workers...)
	kb, reg, stop := w.startKube(t, kubeCfg(), nil)

	kafka := events.Kafka{Brokers: w.kafka.ListenAddrs(), InputTopic: "input-exp-bus-r0001", OutputTopic: "output-exp-bus-r0001", Partitions: 6}
	prov := events.RunProvision{ExperimentID: "exp-bus", RunID: "exp-bus-r0001", Kafka: kafka, SUT: events.SUT{Template: "uc3-go", Backend: "kubernetes",
		Kubernetes: &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2, Placement: events.Placement{Strategy: "consolidate", Nodes: 1}}}}
	k := &kubetest.Kubelet{CS: cs, NS: kb.Namespace(prov.RunID), Nodes: kubetest.Workers}
	k.Run(ctx, t)
	w.provision(t, prov)

	got := w.rec.provisioned(t, prov.RunID, 30*time.Second)
	require.Equal(t, "kubernetes", got.Backend)
	require.Len(t, got.Targets, 2)
	for _, tg := range got.Targets {
		require.Equal(t, "worker-a", tg.Node)
		require.NotEmpty(t, tg.ContainerID)
	}
	topics, err := w.admin.ListTopics(ctx, kafka.InputTopic, kafka.OutputTopic)
	require.NoError(t, err)
	require.Equal(t, 2, w.topics(prov))
	for _, td := range topics.Sorted() {
		require.Len(t, td.Partitions, 6, "partitions from the run's factors")
	}

	require.Equal(t, 1, testutil.CollectAndCount(reg, "greenflow_provisioner_operation_seconds"), "provision time is measured")

	// A new provisioner process: nothing in memory, the teardown still
	// removes the namespace and the topics (named in the record).
	stop()
	w.startKube(t, kubeCfg(), nil)
	w.teardown(t, prov, "teardown:"+prov.RunID)
	td := w.rec.tornDown(t, prov.RunID, 30*time.Second)
	require.False(t, td.Crashed || td.Lost, "%+v", td)
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(prov.RunID)))
	testenv.Eventually(t, 10*time.Second, "topics deleted", func() bool { return w.topics(prov) == 0 })

	// A provision that fails reports why and leaves neither namespace nor topics.
	bad := prov
	bad.RunID, bad.Kafka.InputTopic, bad.Kafka.OutputTopic = "exp-bus-r0002", "input-exp-bus-r0002", "output-exp-bus-r0002"
	kb2 := &kubetest.Kubelet{CS: cs, NS: kb.Namespace(bad.RunID), Nodes: kubetest.Workers,
		Fail: func(string) (string, string) { return "ErrImagePull", `pull access denied for registry.local/uc3` }}
	kb2.Run(ctx, t)
	w.provision(t, bad)
	testenv.Eventually(t, 30*time.Second, "provision failed", func() bool { return w.rec.find(events.TypeRunProvisionFailed, bad.RunID) != nil })
	failed := w.rec.find(events.TypeRunProvisionFailed, bad.RunID).(*events.RunProvisionFailed)
	require.Contains(t, failed.Reason, "ErrImagePull: pull access denied")
	require.False(t, failed.Transient, "a bad image is the user's mistake")
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(bad.RunID)))
	testenv.Eventually(t, 10*time.Second, "topics of the failed run deleted", func() bool { return w.topics(bad) == 0 })
}
