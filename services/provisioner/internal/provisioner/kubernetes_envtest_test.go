//go:build envtest

package provisioner_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Real parts: embedded NATS JetStream, kfake Kafka, and a real
// kube-apiserver + etcd (envtest) where kubetest.Kubelet plays the nodes.
func TestMain(m *testing.M) { kubetest.Main(m) }

// startKube runs a provisioner with the kubernetes backend only (its own
// NATS connection, as a separate process would have).
func (w *world) startKube(t *testing.T, cfg kube.Config, core func(*provisioner.Config)) (*kube.Backend, *prometheus.Registry, func()) {
	return w.startKubeAs(t, kubetest.Admin, cfg, core)
}

func (w *world) startKubeAs(t *testing.T, rc *rest.Config, cfg kube.Config, core func(*provisioner.Config)) (*kube.Backend, *prometheus.Registry, func()) {
	t.Helper()
	inst := w.start(t, options{noLocal: true, kube: &cfg, rest: rc, core: func(c *provisioner.Config) {
		c.RetryBase, c.RetryMax = 200*time.Millisecond, 2*time.Second
		if core != nil {
			core(c)
		}
	}})
	be, ok := inst.p.Backend("kubernetes")
	require.True(t, ok)
	return be.(*kube.Backend), inst.reg, inst.stop
}

// newKubeWorld is a world on the envtest cluster, its nodes registered,
// with the cluster-admin client.
func newKubeWorld(t *testing.T) (*world, kubernetes.Interface) {
	t.Helper()
	w := newWorld(t)
	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, kubetest.Workers...)
	return w, cs
}

func kubeCfg() kube.Config {
	c := kube.Default()
	c.ReadyTimeout, c.UnschedulableGrace, c.TeardownTimeout, c.PollInterval, c.CrashPoll = 20*time.Second, 2*time.Second, time.Second,
		100*time.Millisecond, 100*time.Millisecond
	return c
}

func TestKubernetesRunsOverTheBusWithTopicsAndRestart(t *testing.T) {
	ctx := t.Context()
	w, cs := newKubeWorld(t)
	kb, reg, stop := w.startKube(t, kubeCfg(), nil)

	kafka := events.Kafka{Brokers: w.brokers, InputTopic: "input-exp-bus-r0001", OutputTopic: "output-exp-bus-r0001", Partitions: 6}
	prov := events.RunProvision{ExperimentID: "exp-bus", RunID: "exp-bus-r0001", Kafka: kafka, SUT: events.SUT{Template: "uc3-go", Backend: "kubernetes",
		Kubernetes: &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2, Placement: events.Placement{Strategy: "consolidate", Nodes: 1}}}}
	provtest.StartKubelet(t, cs, kb.Namespace(prov.RunID), kubetest.Workers, nil)
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
	provtest.StartKubelet(t, cs, kb.Namespace(bad.RunID), kubetest.Workers, func(k *kubetest.Kubelet) {
		k.Fail = func(string) (string, string) { return "ErrImagePull", `pull access denied for registry.local/uc3` }
	})
	w.provision(t, bad)
	testenv.Eventually(t, 30*time.Second, "provision failed", func() bool { return w.rec.First(events.TypeRunProvisionFailed, bad.RunID) != nil })
	failed := w.rec.First(events.TypeRunProvisionFailed, bad.RunID).(*events.RunProvisionFailed)
	require.Contains(t, failed.Reason, "ErrImagePull: pull access denied")
	require.False(t, failed.Transient, "a bad image is the user's mistake")
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(bad.RunID)))
	testenv.Eventually(t, 10*time.Second, "topics of the failed run deleted", func() bool { return w.topics(bad) == 0 })
}

func uc3Run(w *world, runID string) events.RunProvision {
	return events.RunProvision{ExperimentID: "exp-k", RunID: runID, Kafka: w.kafkaFor(runID), SUT: events.SUT{Template: "uc3-go", Backend: "kubernetes",
		Kubernetes: &events.KubernetesSUT{Image: "registry.local/uc3:v1"}}}
}

// TestKubernetesOutagesAreWaitedOutAndTeardownIsReconciled stops the
// kube-apiserver for ~20 s during a readiness wait (the run is provisioned
// once it is back) and during a teardown (incomplete is reported with the
// cause, the topics go meanwhile, and the namespace once it is back).
func TestKubernetesOutagesAreWaitedOutAndTeardownIsReconciled(t *testing.T) {
	ctx := t.Context()
	w, cs := newKubeWorld(t)
	cfg := kubeCfg()
	cfg.ReadyTimeout, cfg.TeardownTimeout, cfg.RequestTimeout = 2*time.Minute, 3*time.Second, 5*time.Second
	kb, _, _ := w.startKube(t, cfg, nil)
	restart := func() {}
	defer func() { restart() }()

	// Readiness: no kubelet yet, so the provision waits.
	p := uc3Run(w, "exp-k-outage1")
	w.provision(t, p)
	testenv.Eventually(t, 30*time.Second, "the deployment applied", func() bool {
		_, err := cs.AppsV1().Deployments(kb.Namespace(p.RunID)).Get(ctx, "uc3-processor", metav1.GetOptions{})
		return err == nil
	})
	kubetest.StopAPIServer(t)
	restart = func() { kubetest.StartAPIServer(t) }
	down := time.Now()
	<-time.After(20 * time.Second) // the outage lasts 20 s: a stimulus, not a wait for a condition
	require.Nil(t, w.rec.First(events.TypeRunProvisionFailed, p.RunID), "the outage does not fail the provision")
	kubetest.StartAPIServer(t)
	restart = func() {}
	provtest.StartKubelet(t, cs, kb.Namespace(p.RunID), kubetest.Workers, nil)
	w.rec.provisioned(t, p.RunID, 90*time.Second)

	// Teardown: the API server goes away just before.
	kubetest.StopAPIServer(t)
	restart = func() { kubetest.StartAPIServer(t) }
	down = time.Now()
	w.teardown(t, p, "teardown:"+p.RunID)
	testenv.Eventually(t, 20*time.Second, "an incomplete teardown reported with its cause", func() bool { return len(w.rec.incomplete(p.RunID)) > 0 })
	inc := w.rec.incomplete(p.RunID)[0]
	require.Contains(t, inc.Reason, "remove the system under test")
	require.Contains(t, inc.Reason, "connection refused")
	require.NotContains(t, inc.Reason, "delete the topics", "the topics are deleted though the namespace cannot be")
	require.Equal(t, 0, w.topics(p))
	<-time.After(time.Until(down.Add(20 * time.Second)))
	require.Greater(t, len(w.rec.incomplete(p.RunID)), 1, "each attempt reports (its own message id)")
	kubetest.StartAPIServer(t)
	restart = func() {}
	back := time.Now()
	td := w.rec.tornDown(t, p.RunID, 60*time.Second)
	require.False(t, td.Lost || td.Crashed, "%+v", td)
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(p.RunID)))
	t.Logf("teardown finished %s after the API server served again; %d incomplete reports during the %s outage",
		time.Since(back).Round(time.Millisecond), len(w.rec.incomplete(p.RunID)), back.Sub(down).Round(time.Second))
}

// TestAMissingDeleteVerbIsNamedAndTheTeardownFinishesOnceGranted: under a
// role without "delete namespaces", the teardown reports incomplete with
// the verb, deletes the topics anyway, and keeps trying; once the verb is
// granted, the namespace goes.
func TestAMissingDeleteVerbIsNamedAndTheTeardownFinishesOnceGranted(t *testing.T) {
	ctx := t.Context()
	w, cs := newKubeWorld(t)
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "create", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "events"}, Verbs: []string{"list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "create", "patch"}},
	}
	const sa = "no-delete-namespaces"
	role := provtest.BindRole(t, cs, sa, rules, "list", "namespaces")
	cfg := kubeCfg()
	kb, _, _ := w.startKubeAs(t, kubetest.As(sa), cfg, nil)
	p := uc3Run(w, "exp-k-rbac")
	provtest.StartKubelet(t, cs, kb.Namespace(p.RunID), kubetest.Workers, nil)
	w.provision(t, p)
	w.rec.provisioned(t, p.RunID, 30*time.Second)

	w.teardown(t, p, "teardown:"+p.RunID)
	testenv.Eventually(t, 20*time.Second, "an incomplete teardown reported", func() bool { return len(w.rec.incomplete(p.RunID)) > 0 })
	inc := w.rec.incomplete(p.RunID)[0]
	require.Contains(t, inc.Reason, `cannot delete resource "namespaces"`, "the reason names the missing verb")
	require.Contains(t, inc.Reason, "deploy/base/provisioner-rbac.yaml", "and the fix")
	testenv.Eventually(t, 10*time.Second, "the topics deleted anyway", func() bool { return w.topics(p) == 0 })
	n, err := cs.CoreV1().Namespaces().Get(ctx, kb.Namespace(p.RunID), metav1.GetOptions{})
	require.NoError(t, err)
	require.Nil(t, n.DeletionTimestamp)

	role.Rules[0].Verbs = append(role.Rules[0].Verbs, "delete")
	_, err = cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{})
	require.NoError(t, err)
	td := w.rec.tornDown(t, p.RunID, 60*time.Second)
	require.False(t, td.Lost || td.Crashed, "%+v", td)
	require.True(t, kubetest.NamespaceDeleted(t, cs, kb.Namespace(p.RunID)))
}

// TestNamespacesOfEndedAndUnknownRunsAreRemoved: a provisioner removes the
// namespace (and topics) of a run the scheduler has ended, and one of this
// installation with no record, and counts them.
func TestNamespacesOfEndedAndUnknownRunsAreRemoved(t *testing.T) {
	ctx := t.Context()
	w, cs := newKubeWorld(t)
	kb, reg, _ := w.startKube(t, kubeCfg(), func(c *provisioner.Config) {
		c.ReconcileEvery, c.UnknownGrace = 200*time.Millisecond, 2*time.Second
	})
	over, unknown := uc3Run(w, "exp-k-over"), uc3Run(w, "exp-k-unknown")
	for _, p := range []events.RunProvision{over, unknown} {
		provtest.StartKubelet(t, cs, kb.Namespace(p.RunID), kubetest.Workers, nil)
		w.provision(t, p)
		w.rec.provisioned(t, p.RunID, 30*time.Second)
	}
	require.NoError(t, w.bus.Publish(ctx, events.RunState{ExperimentID: "exp-k", RunID: over.RunID, State: events.RunStateCancelled}, ""))
	testenv.Eventually(t, 30*time.Second, "the ended run's namespace deleted", func() bool { return kubetest.NamespaceDeleted(t, cs, kb.Namespace(over.RunID)) })
	testenv.Eventually(t, 10*time.Second, "and its topics", func() bool { return w.topics(over) == 0 })

	st, _ := provtest.Records(t, w.nats)
	e, err := st.Get(ctx, state.KubeKey(unknown.RunID))
	require.NoError(t, err)
	require.NoError(t, st.Delete(ctx, e.Key, e.Rev)) // its record is lost
	testenv.Eventually(t, 30*time.Second, "the unknown run's namespace deleted", func() bool {
		return kubetest.NamespaceDeleted(t, cs, kb.Namespace(unknown.RunID))
	})
	testenv.Eventually(t, 10*time.Second, "and its topics, named on the namespace", func() bool { return w.topics(unknown) == 0 })
	n, err := cs.CoreV1().Namespaces().Get(ctx, kb.Namespace(unknown.RunID), metav1.GetOptions{})
	if err == nil {
		require.Equal(t, st.Platform(), n.Annotations[kube.AnnotationPlatform])
	} else {
		require.True(t, apierrors.IsNotFound(err))
	}
	require.Equal(t, 1.0, removed(t, reg, "kubernetes", "namespace", "unknown"), "counted")
	require.Equal(t, 1.0, removed(t, reg, "kubernetes", "topics", "unknown"))
}

// TestARepeatedProvisionOfARunningKubeRunLeavesItAlone: the provision
// command of a run that is running comes again (a redelivery after the
// provisioner died between its answer and its ack, or a re-send). It is
// answered from the run's record: nothing is applied again — the
// namespace keeps its readiness baseline, so a restart during the run is
// still reported as a crash — and nothing is deleted.
func TestARepeatedProvisionOfARunningKubeRunLeavesItAlone(t *testing.T) {
	ctx := t.Context()
	w, cs := newKubeWorld(t)
	kb, _, _ := w.startKube(t, kubeCfg(), nil)
	p := uc3Run(w, "exp-k-again1")
	ns := kb.Namespace(p.RunID)
	provtest.StartKubelet(t, cs, ns, kubetest.Workers, nil)
	w.provision(t, p)
	got := w.rec.provisioned(t, p.RunID, 30*time.Second)
	before, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, before.Annotations, kube.AnnotationReady)
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "uc3-processor", metav1.GetOptions{})
	require.NoError(t, err)

	require.NoError(t, w.bus.Publish(ctx, p, "provision-again:"+p.RunID))
	testenv.Eventually(t, 20*time.Second, "the repeated command handled", func() bool { return w.consumerPending(t) == 0 })
	after, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	require.Nil(t, after.DeletionTimestamp, "the running SUT's namespace is not deleted")
	require.Equal(t, before.ResourceVersion, after.ResourceVersion, "the namespace is not applied again")
	require.Equal(t, before.Annotations[kube.AnnotationReady], after.Annotations[kube.AnnotationReady], "the readiness baseline is kept")
	depAfter, err := cs.AppsV1().Deployments(ns).Get(ctx, "uc3-processor", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, dep.ResourceVersion, depAfter.ResourceVersion, "the deployment is not applied again")
	require.Nil(t, w.rec.First(events.TypeRunProvisionFailed, p.RunID))

	// The crash watch still sees a restart during the run.
	kubetest.Crash(t, cs, ns, got.Targets[0].Pod)
	testenv.Eventually(t, 20*time.Second, "the crash reported", func() bool {
		m := w.rec.First(events.TypeRunTornDown, p.RunID)
		return m != nil && m.(*events.RunTornDown).Crashed
	})
	require.Contains(t, w.rec.First(events.TypeRunTornDown, p.RunID).(*events.RunTornDown).Reason, "OOMKilled")
}
