//go:build envtest

package provisioner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
)

// Real parts: embedded NATS JetStream, kfake Kafka, and a real
// kube-apiserver + etcd (envtest) where kubetest.Kubelet plays the nodes.
func TestMain(m *testing.M) { kubetest.Main(m) }

type recorder struct {
	mu  sync.Mutex
	got []events.Message
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

func TestKubernetesRunsOverTheBusWithTopicsAndRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer cluster.Close()
	kcl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer kcl.Close()
	admin := kadm.NewClient(kcl)

	url := testenv.NATS(t)
	b, err := bus.Connect(ctx, url, "test", zap.NewNop(), nil)
	require.NoError(t, err)
	defer b.Close()
	rec := &recorder{}
	go func() {
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunProvisioned, events.TypeRunProvisionFailed, events.TypeRunTornDown},
			func(d bus.Delivery) {
				rec.mu.Lock()
				rec.got = append(rec.got, d.Msg)
				rec.mu.Unlock()
			})
	}()

	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, kubetest.Workers...)
	reg := prometheus.NewRegistry()
	start := func() (context.CancelFunc, *kube.Backend) {
		kb, err := kube.New(kubetest.Admin, kube.Config{ReadyTimeout: 20 * time.Second, UnschedulableGrace: 2 * time.Second,
			TeardownTimeout: time.Second, PollInterval: 100 * time.Millisecond}, zap.NewNop())
		require.NoError(t, err)
		p, err := provisioner.New(b, map[string]provisioner.Backend{"kubernetes": kb}, testenv.Logger(t), reg)
		require.NoError(t, err)
		pctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Run(pctx) }()
		return func() { stop(); <-done }, kb
	}
	stop, kb := start()

	kafka := events.Kafka{Brokers: cluster.ListenAddrs(), InputTopic: "input-exp-bus-r0001", OutputTopic: "output-exp-bus-r0001", Partitions: 6}
	prov := events.RunProvision{ExperimentID: "exp-bus", RunID: "exp-bus-r0001", Kafka: kafka, SUT: events.SUT{Template: "uc3-go", Backend: "kubernetes",
		Kubernetes: &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2, Placement: events.Placement{Strategy: "consolidate", Nodes: 1}}}}
	k := &kubetest.Kubelet{CS: cs, NS: kb.Namespace(prov.RunID), Nodes: kubetest.Workers}
	k.Run(ctx, t)
	require.NoError(t, b.Publish(ctx, prov, "provision:"+prov.RunID))

	testenv.Eventually(t, 30*time.Second, "run provisioned", func() bool { return rec.find(events.TypeRunProvisioned, prov.RunID) != nil })
	require.Nil(t, rec.find(events.TypeRunProvisionFailed, prov.RunID))
	got := rec.find(events.TypeRunProvisioned, prov.RunID).(*events.RunProvisioned)
	require.Equal(t, "kubernetes", got.Backend)
	require.Len(t, got.Targets, 2)
	for _, tg := range got.Targets {
		require.Equal(t, "worker-a", tg.Node)
		require.NotEmpty(t, tg.ContainerID)
	}
	topics, err := admin.ListTopics(ctx, kafka.InputTopic, kafka.OutputTopic)
	require.NoError(t, err)
	require.Equal(t, 2, existing(ctx, admin, kafka.InputTopic, kafka.OutputTopic))
	for _, td := range topics.Sorted() {
		require.Len(t, td.Partitions, 6, "partitions from the run's factors")
	}

	require.Equal(t, 1, testutil.CollectAndCount(reg, "greenflow_provisioner_operation_seconds"), "provision time is measured")

	// A new provisioner process: nothing in memory, the teardown still
	// removes the namespace (found by label) and the topics (named in it).
	stop()
	reg = prometheus.NewRegistry()
	stop, _ = start()
	defer func() { stop() }()
	require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: prov.ExperimentID, RunID: prov.RunID, Backend: "kubernetes", Kafka: &kafka},
		"teardown:"+prov.RunID))
	testenv.Eventually(t, 30*time.Second, "run torn down", func() bool { return rec.find(events.TypeRunTornDown, prov.RunID) != nil })
	require.False(t, rec.find(events.TypeRunTornDown, prov.RunID).(*events.RunTornDown).Crashed)
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(prov.RunID)))
	testenv.Eventually(t, 10*time.Second, "topics deleted", func() bool {
		return existing(ctx, admin, kafka.InputTopic, kafka.OutputTopic) == 0
	})

	// A provision that fails reports why and leaves neither namespace nor topics.
	bad := prov
	bad.RunID, bad.Kafka.InputTopic, bad.Kafka.OutputTopic = "exp-bus-r0002", "input-exp-bus-r0002", "output-exp-bus-r0002"
	kb2 := &kubetest.Kubelet{CS: cs, NS: kb.Namespace(bad.RunID), Nodes: kubetest.Workers,
		Fail: func(string) (string, string) { return "ErrImagePull", `pull access denied for registry.local/uc3` }}
	kb2.Run(ctx, t)
	require.NoError(t, b.Publish(ctx, bad, "provision:"+bad.RunID))
	testenv.Eventually(t, 30*time.Second, "provision failed", func() bool { return rec.find(events.TypeRunProvisionFailed, bad.RunID) != nil })
	require.Contains(t, rec.find(events.TypeRunProvisionFailed, bad.RunID).(*events.RunProvisionFailed).Reason, "ErrImagePull: pull access denied")
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(bad.RunID)))
	testenv.Eventually(t, 10*time.Second, "topics of the failed run deleted", func() bool {
		return existing(ctx, admin, bad.Kafka.InputTopic, bad.Kafka.OutputTopic) == 0
	})
}

// existing counts the named topics that exist (ListTopics reports missing
// ones with an error).
func existing(ctx context.Context, admin *kadm.Client, topics ...string) int {
	td, err := admin.ListTopics(ctx, topics...)
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
