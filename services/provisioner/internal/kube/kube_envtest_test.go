//go:build envtest

package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
)

var workers = kubetest.Workers

func run(name, template string, k *events.KubernetesSUT) events.RunProvision {
	exp := "exp-" + name
	return events.RunProvision{ExperimentID: exp, RunID: exp + "-r0001", SUT: events.SUT{Template: template, Backend: "kubernetes", Kubernetes: k},
		Kafka: events.Kafka{Brokers: []string{"kafka-bootstrap.kafka:9092"}, InputTopic: "input-" + exp, OutputTopic: "output-" + exp, Partitions: 6}}
}

// deployment is the manifest of a Deployment named name whose pods (labelled
// app: name) run one container, given as a YAML flow mapping.
func deployment(name, container string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - %[2]s
`, name, container)
}

// deployed starts the fake kubelet for the run's namespace.
func deployed(t testing.TB, b *Backend, p events.RunProvision, mod func(*kubetest.Kubelet)) {
	t.Helper()
	provtest.StartKubelet(t, kubetest.AdminClient(t), b.Namespace(p.RunID), workers, mod)
}

// cluster is a cluster-admin client of the envtest API server, with the
// worker nodes registered.
func cluster(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, workers...)
	return cs
}

// remove tears the run down, which must succeed.
func remove(t testing.TB, b *Backend, p events.RunProvision) {
	t.Helper()
	_, _, err := b.Remove(context.Background(), p.RunID, nil)
	require.NoError(t, err, "teardown of %s", p.RunID)
}

// testConfig is the defaults with waits short enough for tests.
func testConfig() Config {
	cfg := Default()
	cfg.ReadyTimeout, cfg.UnschedulableGrace, cfg.TeardownTimeout, cfg.PollInterval = 20*time.Second, 2*time.Second, 2*time.Second, 100*time.Millisecond
	return cfg
}

func newBackend(t testing.TB, rc *rest.Config, mod func(*Config)) *Backend {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg, Deps{REST: rc})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

func TestConsolidatedUC3GoDeploysReportsTargetsAndTearsDown(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("consolidate", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3-processor:v1", Replicas: 3,
		Placement: events.Placement{Strategy: "consolidate", Nodes: 1, NodeSelector: map[string]string{"pool": "sut"}}})
	p.SUT.Params = map[string]string{"emitInterval": "5s"}
	deployed(t, b, p, nil)
	ctx := context.Background()

	targets, err := b.Provision(ctx, p)
	require.NoError(t, err)
	require.Len(t, targets, 3, "one target per container of the 3 pods")
	ns := b.Namespace(p.RunID)
	for _, tg := range targets {
		require.Equal(t, "pod", tg.Kind)
		require.Equal(t, "sut", tg.Role)
		require.Equal(t, ns, tg.Namespace)
		require.Equal(t, "worker-a", tg.Node, "consolidated onto the first matching node that takes pods (a-control-plane is tainted)")
		require.Regexp(t, `^containerd://[0-9a-f]{64}$`, tg.ContainerID)
		require.Equal(t, "pod/"+ns+"/"+tg.Pod+"/uc3-processor", tg.ID)
	}

	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, p.ExperimentID, n.Labels[LabelExperiment])
	require.Equal(t, p.RunID, n.Labels[LabelRun])
	require.Equal(t, "greenflow", n.Labels[LabelManagedBy])
	require.Equal(t, "worker-a", n.Annotations[AnnotationPlacement])

	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "uc3-processor", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(3), *d.Spec.Replicas)
	managers := map[string]bool{}
	for _, f := range d.ManagedFields {
		if f.Operation == metav1.ManagedFieldsOperationApply {
			managers[f.Manager] = true
		}
	}
	require.True(t, managers["greenflow-provisioner"], "applied server-side with the field manager, got %v", d.ManagedFields)
	pod := d.Spec.Template.Spec
	require.Equal(t, map[string]string{"pool": "sut"}, pod.NodeSelector)
	require.Equal(t, []string{"worker-a"}, pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values)
	require.Empty(t, pod.TopologySpreadConstraints, "one node: nothing to spread")
	args := pod.Containers[0].Args
	require.Subset(t, args, []string{"--brokers", "kafka-bootstrap.kafka:9092", "--input", p.Kafka.InputTopic, "--emit-interval", "5s", "--group", "uc3-" + p.RunID})
	require.Equal(t, p.RunID, d.Spec.Template.Labels[LabelRun])

	again, err := b.Provision(ctx, p)
	require.NoError(t, err, "a redelivered provision does no harm")
	require.Equal(t, targets, again)

	start := time.Now()
	crashed, reason, err := b.Remove(ctx, p.RunID, nil)
	require.NoError(t, err)
	require.False(t, crashed, reason)
	require.True(t, kubetest.NamespaceDeleted(t, cs, ns))
	// envtest has no namespace controller: the namespace stays Terminating,
	// and teardown gives up waiting at its bound (2 s here).
	require.WithinRange(t, time.Now(), start.Add(2*time.Second), start.Add(4*time.Second), "the wait is bounded")
	_, _, err = b.Remove(ctx, p.RunID, nil)
	require.NoError(t, err, "a repeated teardown does no harm")
}

func TestSpreadKStreamsHasTheodoliteEnvironmentAndSpreadConstraint(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("spread", "uc3-kstreams", &events.KubernetesSUT{Image: "ghcr.io/cau-se/theodolite-uc3-kstreams-app:latest", Replicas: 3,
		KafkaBootstrap: "theodolite-kafka-kafka-bootstrap:9092", SchemaRegistryURL: "http://theodolite-kafka-schema-registry:8081",
		Env: map[string]string{"COMMIT_INTERVAL_MS": "1000", "NUM_THREADS": "2"}, Placement: events.Placement{Strategy: "spread"}})
	deployed(t, b, p, nil)
	ctx := context.Background()
	targets, err := b.Provision(ctx, p)
	require.NoError(t, err)
	require.Len(t, targets, 3)

	d, err := cs.AppsV1().Deployments(b.Namespace(p.RunID)).Get(ctx, "uc3-kstreams", metav1.GetOptions{})
	require.NoError(t, err)
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	require.Equal(t, "theodolite-kafka-kafka-bootstrap:9092", env["KAFKA_BOOTSTRAP_SERVERS"])
	require.Equal(t, "http://theodolite-kafka-schema-registry:8081", env["SCHEMA_REGISTRY_URL"])
	require.Equal(t, p.Kafka.InputTopic, env["KAFKA_INPUT_TOPIC"])
	require.Equal(t, "1000", env["COMMIT_INTERVAL_MS"], "the run's env overrides the template's")
	require.Equal(t, "2", env["NUM_THREADS"])
	require.Equal(t, "4Gi", c.Resources.Limits.Memory().String(), "Theodolite's default limits")
	require.Equal(t, "1", c.Resources.Limits.Cpu().String())
	tsc := d.Spec.Template.Spec.TopologySpreadConstraints
	require.Len(t, tsc, 1)
	require.Equal(t, hostnameKey, tsc[0].TopologyKey)
	require.Equal(t, int32(1), tsc[0].MaxSkew)
	require.Equal(t, corev1.DoNotSchedule, tsc[0].WhenUnsatisfiable)
	require.Equal(t, p.RunID, tsc[0].LabelSelector.MatchLabels[LabelRun])
	require.Nil(t, d.Spec.Template.Spec.Affinity, "spread over every node: no pinning")

	remove(t, b, p)
}

func TestFlinkJobClusterDeploysJobAndTaskManagers(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("flink", "uc3-flink", &events.KubernetesSUT{Image: "ghcr.io/cau-se/theodolite-uc3-flink:latest", Replicas: 2,
		CPU: "500m", Memory: "2Gi", Placement: events.Placement{Strategy: "consolidate", Nodes: 2}})
	deployed(t, b, p, nil)
	ctx := context.Background()
	targets, err := b.Provision(ctx, p)
	require.NoError(t, err)
	require.Len(t, targets, 3, "a job manager and two task managers")
	nodes := map[string]bool{}
	for _, tg := range targets {
		nodes[tg.Node] = true
	}
	require.Equal(t, map[string]bool{"worker-a": true, "worker-b": true}, nodes, "consolidated onto two nodes")

	ns := b.Namespace(p.RunID)
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "flink-jobmanager", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, svc.Spec.Ports, 3)
	tm, err := cs.AppsV1().Deployments(ns).Get(ctx, "flink-taskmanager", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(2), *tm.Spec.Replicas)
	require.Equal(t, "2Gi", tm.Spec.Template.Spec.Containers[0].Resources.Requests.Memory().String())
	require.Len(t, tm.Spec.Template.Spec.TopologySpreadConstraints, 1, "even over the two chosen nodes")
	jm, err := cs.AppsV1().Deployments(ns).Get(ctx, "flink-jobmanager", metav1.GetOptions{})
	require.NoError(t, err)
	var parallelism string
	for _, e := range jm.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "PARALLELISM" {
			parallelism = e.Value
		}
	}
	require.Equal(t, "2", parallelism)
	remove(t, b, p)
}

func TestImagePullErrorFailsFastWithTheReasonAndLeavesNothing(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("pullerr", "uc3-go", &events.KubernetesSUT{Image: "registry.local/does-not-exist:v0"})
	deployed(t, b, p, func(k *kubetest.Kubelet) {
		k.Fail = func(string) (string, string) {
			return "ImagePullBackOff", `Back-off pulling image "registry.local/does-not-exist:v0"`
		}
	})
	start := time.Now()
	_, err := b.Provision(context.Background(), p)
	require.Error(t, err)
	require.Less(t, time.Since(start), 10*time.Second, "fails on the reason, not at the 20 s timeout")
	require.Contains(t, err.Error(), "ImagePullBackOff")
	require.Contains(t, err.Error(), "uc3-processor-0")
	require.Contains(t, err.Error(), "registry.local/does-not-exist:v0")
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)), "a failed provision deletes its namespace")
}

func TestCrashLoopAndUnschedulableAreNamed(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("crashloop", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1"})
	deployed(t, b, p, func(k *kubetest.Kubelet) {
		k.Fail = func(string) (string, string) { return "CrashLoopBackOff", "back-off 10s restarting failed container" }
	})
	_, err := b.Provision(context.Background(), p)
	require.ErrorContains(t, err, "container uc3-processor: CrashLoopBackOff")

	p = run("unschedulable", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1", CPU: "64"})
	deployed(t, b, p, func(k *kubetest.Kubelet) { k.Unschedulable = "0/3 nodes are available: 3 Insufficient cpu." })
	_, err = b.Provision(context.Background(), p)
	require.ErrorContains(t, err, "unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
	require.ErrorContains(t, err, "warning events: FailedScheduling pod/uc3-processor-0: 0/3 nodes are available: 3 Insufficient cpu.",
		"the namespace's warning events are part of the reason")
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)))
}

func TestNotReadyAtTimeoutSaysWhatIsMissing(t *testing.T) {
	cs := kubetest.AdminClient(t)
	b := newBackend(t, kubetest.Admin, func(c *Config) { c.ReadyTimeout = time.Second })
	p := run("timeout", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2}) // no kubelet: nothing happens
	_, err := b.Provision(context.Background(), p)
	require.ErrorContains(t, err, "not ready after 1s: deployment uc3-processor: 0/2 replicas ready")
	require.ErrorContains(t, err, "no pods were created")
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)))
}

func TestBadInputIsRefusedBeforeAnythingIsCreated(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, nil)
	cases := []struct {
		name, template string
		k              *events.KubernetesSUT
		want           string
	}{
		{"render", "manifest", &events.KubernetesSUT{Manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Nope }}}\n"},
			`template manifest does not render: template: manifest:3:20: executing "manifest" at <.Nope>: can't evaluate field Nope`},
		{"unknownkind", "manifest", &events.KubernetesSUT{Manifest: "apiVersion: flink.apache.org/v1beta1\nkind: FlinkDeployment\nmetadata: {name: uc3}\n"},
			"template manifest, object 1 (FlinkDeployment uc3): unknown kind: the cluster serves no FlinkDeployment in flink.apache.org/v1beta1"},
		{"clusterscoped", "manifest", &events.KubernetesSUT{Manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: b}\n"},
			"template manifest, object 2 (ClusterRole b): ClusterRole is cluster-scoped"},
		{"noimage", "uc3-kstreams", &events.KubernetesSUT{}, "template uc3-kstreams: sut.kubernetes.image is empty"},
		{"toofewnodes", "uc3-go", &events.KubernetesSUT{Image: "x", Placement: events.Placement{Strategy: "consolidate", Nodes: 5, NodeSelector: map[string]string{"pool": "sut"}}},
			"placement: consolidate onto 5 node(s), but only 3 of nodes matching pool=sut are ready and schedulable (worker-a, worker-b, worker-c, a-control-plane (tainted))"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := run("bad-"+c.name, c.template, c.k)
			_, err := b.Provision(context.Background(), p)
			require.ErrorContains(t, err, c.want)
			_, err = cs.CoreV1().Namespaces().Get(context.Background(), b.Namespace(p.RunID), metav1.GetOptions{})
			require.True(t, apierrors.IsNotFound(err), "nothing is created for bad input")
		})
	}
}

func TestManifestTemplateAppliesAnyNamespacedObjects(t *testing.T) {
	cs := kubetest.AdminClient(t)
	b := newBackend(t, kubetest.Admin, nil)
	p := run("manifest", "manifest", &events.KubernetesSUT{Manifest: `apiVersion: v1
kind: ConfigMap
metadata: {name: sut-config}
data:
  topic: {{ .InputTopic }}
  partitions: "{{ .Partitions }}"
  window: {{ param "window" "1d" }}
`})
	ctx := context.Background()
	targets, err := b.Provision(ctx, p)
	require.NoError(t, err)
	require.Empty(t, targets, "no pods: nothing to measure")
	cm, err := cs.CoreV1().ConfigMaps(b.Namespace(p.RunID)).Get(ctx, "sut-config", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"topic": p.Kafka.InputTopic, "partitions": "6", "window": "1d"}, cm.Data)
	require.Equal(t, p.RunID, cm.Labels[LabelRun])
	remove(t, b, p)
}

func TestRestartedBackendFindsRunsInTheClusterAndReportsCrashes(t *testing.T) {
	cs := cluster(t)
	first := newBackend(t, kubetest.Admin, nil)
	p := run("restart", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2,
		Placement: events.Placement{Strategy: "spread", Nodes: 2}})
	deployed(t, first, p, nil)
	ctx := context.Background()
	targets, err := first.Provision(ctx, p)
	require.NoError(t, err)

	second := newBackend(t, kubetest.Admin, nil) // a new process: nothing in memory
	runs, err := second.Runs(ctx)
	require.NoError(t, err)
	var found *Deployed
	for i := range runs {
		if runs[i].RunID == p.RunID {
			found = &runs[i]
		}
	}
	require.NotNil(t, found, "the run is read back from the cluster: %+v", runs)
	require.Equal(t, Deployed{ExperimentID: p.ExperimentID, RunID: p.RunID, Namespace: second.Namespace(p.RunID), Template: "uc3-go",
		Created: found.Created, Kafka: &p.Kafka}, *found, "its topics too, from the namespace")
	require.WithinDuration(t, time.Now(), found.Created, time.Minute)

	again, err := second.Provision(ctx, p)
	require.NoError(t, err)
	require.Equal(t, targets, again, "same pods, same pinned nodes (from the namespace annotation)")

	kubetest.Crash(t, cs, second.Namespace(p.RunID), targets[0].Pod)
	crashed, reason, err := second.Remove(ctx, p.RunID, nil)
	require.NoError(t, err)
	require.True(t, crashed)
	require.Contains(t, reason, "container uc3-processor restarted 2 time(s), last exit code 137 (OOMKilled)")
	require.True(t, kubetest.NamespaceDeleted(t, cs, second.Namespace(p.RunID)))
}

// TestLeastPrivilegeClusterRole runs the backend as the service account
// deploy/base/provisioner-rbac.yaml binds, and as one without the binding.
func TestLeastPrivilegeClusterRole(t *testing.T) {
	cs := cluster(t)
	provtest.ApplyRBAC(t, cs)

	ctx := context.Background()
	b := newBackend(t, kubetest.As(provtest.ServiceAccount), nil)
	p := run("rbac", "uc3-flink", &events.KubernetesSUT{Image: "ghcr.io/cau-se/theodolite-uc3-flink:latest", Replicas: 2,
		Placement: events.Placement{Strategy: "consolidate", Nodes: 1}})
	deployed(t, b, p, nil)
	targets, err := b.Provision(ctx, p)
	require.NoError(t, err, "everything the backend does is granted")
	require.Len(t, targets, 3)
	runs, err := b.Runs(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, runs)
	remove(t, b, p)
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)))

	// Failures name the verb, the resource and the fix.
	failed := run("rbac-failed", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1"})
	deployed(t, b, failed, func(k *kubetest.Kubelet) {
		k.Fail = func(string) (string, string) { return "ErrImagePull", "not found" }
	})
	_, err = b.Provision(ctx, failed)
	require.ErrorContains(t, err, "ErrImagePull")
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(failed.RunID)), "the role may delete what a failed provision created")

	none := newBackend(t, kubetest.As("no-role"), nil)
	_, err = none.Provision(ctx, run("rbac-none", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1"}))
	require.ErrorContains(t, err, `cannot get resource "namespaces"`)
	require.ErrorContains(t, err, "system:serviceaccount:greenflow:no-role")
	require.ErrorContains(t, err, "deploy/base/provisioner-rbac.yaml")
	_, _, err = none.Remove(ctx, p.RunID, nil)
	require.ErrorContains(t, err, `cannot list resource "namespaces"`)
}

func TestStrimziKafkaTopicsWhenTheCRDExists(t *testing.T) {
	cs := kubetest.AdminClient(t)
	ctx := context.Background()
	provtest.ApplyRBAC(t, cs)
	sa := kubetest.As(provtest.ServiceAccount) // the least-privilege role covers KafkaTopics
	b := newBackend(t, sa, func(c *Config) { c.StrimziKafka = "kafka/my-cluster"; c.TopicReplicas = 3 })
	p := run("strimzi", "uc3-go", &events.KubernetesSUT{Image: "x"})

	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kafka", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kafka"}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	provtest.UninstallCRD(t, "kafkatopics.kafka.strimzi.io") // whatever ran before
	_, err := b.ManagesTopics()
	require.ErrorContains(t, err, "strimzi: --strimzi-kafka is kafka/my-cluster but the cluster serves no KafkaTopic in kafka.strimzi.io/v1beta2")
	plain := newBackend(t, sa, nil)
	managed, err := plain.ManagesTopics()
	require.NoError(t, err)
	require.False(t, managed, "without --strimzi-kafka the provisioner uses kadm")

	provtest.InstallCRD(t, "testdata/kafkatopic-crd.yaml")
	managed, err = b.ManagesTopics()
	require.NoError(t, err)
	require.True(t, managed)

	kt := kafkaTopics(t, "kafka")
	strimziOperator(t, "kafka")

	require.NoError(t, b.CreateTopics(ctx, p))
	list, err := kt.List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + p.RunID})
	require.NoError(t, err)
	require.Len(t, list.Items, 2)
	for _, u := range list.Items {
		require.Equal(t, "my-cluster", u.GetLabels()["strimzi.io/cluster"])
		parts, _, _ := unstructured.NestedInt64(u.Object, "spec", "partitions")
		replicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
		name, _, _ := unstructured.NestedString(u.Object, "spec", "topicName")
		require.Equal(t, int64(6), parts, "partitions from the run's factors")
		require.Equal(t, int64(3), replicas)
		require.Contains(t, []string{p.Kafka.InputTopic, p.Kafka.OutputTopic}, name)
	}
	require.NoError(t, b.CreateTopics(ctx, p), "a repeated provision does no harm")

	restarted := newBackend(t, sa, func(c *Config) { c.StrimziKafka = "kafka/my-cluster" })
	require.NoError(t, restarted.DeleteTopics(ctx, p.RunID), "found by label after a restart")
	list, err = kt.List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + p.RunID})
	require.NoError(t, err)
	require.Empty(t, list.Items)

	bad := run("strimzi-bad", "uc3-go", &events.KubernetesSUT{Image: "x"})
	err = b.CreateTopics(ctx, bad)
	require.ErrorContains(t, err, "KafkaTopic kafka/input-exp-strimzi-bad is not ready: InvalidResourceException: Number of partitions cannot be decreased")
}

func kafkaTopics(t *testing.T, ns string) dynamic.ResourceInterface {
	return provtest.Dynamic(t, kubetest.Admin).Resource(schema.GroupVersionResource{Group: "kafka.strimzi.io", Version: "v1beta2", Resource: "kafkatopics"}).Namespace(ns)
}

// strimziOperator plays Strimzi's topic operator in namespace ns until the
// test ends: every KafkaTopic becomes Ready, except those with "bad" in
// their name, which it refuses.
func strimziOperator(t *testing.T, ns string) {
	kt := kafkaTopics(t, ns)
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go func() {
		for ctx.Err() == nil {
			list, err := kt.List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, u := range list.Items {
					if _, found, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); found {
						continue
					}
					cond := map[string]any{"type": "Ready", "status": "True"}
					if strings.Contains(u.GetName(), "bad") {
						cond = map[string]any{"type": "Ready", "status": "False", "reason": "InvalidResourceException", "message": "Number of partitions cannot be decreased"}
					}
					_ = unstructured.SetNestedSlice(u.Object, []any{cond}, "status", "conditions")
					_, _ = kt.UpdateStatus(ctx, &u, metav1.UpdateOptions{})
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// TestAPIServerOutageDuringReadinessIsWaitedOut stops the kube-apiserver
// for 20 s while a run waits to be ready: the wait goes on, and the run is
// provisioned once the server is back, instead of failing at the outage.
func TestAPIServerOutageDuringReadinessIsWaitedOut(t *testing.T) {
	cs := cluster(t)
	b := newBackend(t, kubetest.Admin, func(c *Config) { c.ReadyTimeout = 2 * time.Minute; c.RequestTimeout = 5 * time.Second })
	p := run("outage-ready", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2})
	type result struct {
		targets []events.Target
		err     error
	}
	done := make(chan result, 1)
	go func() {
		targets, err := b.Provision(context.Background(), p)
		done <- result{targets, err}
	}()
	// No kubelet yet: the provision waits for readiness.
	testenv.Eventually(t, 30*time.Second, "the deployment applied", func() bool {
		_, err := cs.AppsV1().Deployments(b.Namespace(p.RunID)).Get(context.Background(), "uc3-processor", metav1.GetOptions{})
		return err == nil
	})
	kubetest.StopAPIServer(t)
	stopped := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			kubetest.StartAPIServer(t)
		}
	}()
	select {
	case r := <-done:
		t.Fatalf("the provision ended during the outage: %+v", r)
	case <-time.After(20 * time.Second):
	}
	kubetest.StartAPIServer(t)
	restarted = true
	t.Logf("API server was down for %s", time.Since(stopped).Round(time.Millisecond))
	deployed(t, b, p, nil) // the nodes start the pods
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Len(t, r.targets, 2)
	case <-time.After(90 * time.Second):
		t.Fatal("not provisioned after the API server came back")
	}
	_, _, err := b.Remove(context.Background(), p.RunID, nil)
	require.NoError(t, err)
}

// TestATransientFailurePastTheDeadlineIsMarkedTransient: an API server
// down for longer than the provision may take fails it as transient (the
// scheduler retries the run); a bad manifest fails it for good.
func TestATransientFailurePastTheDeadlineIsMarkedTransient(t *testing.T) {
	b := newBackend(t, kubetest.Admin, func(c *Config) { c.ReadyTimeout = 3 * time.Second; c.RequestTimeout = 2 * time.Second })
	kubetest.StopAPIServer(t)
	_, err := b.Provision(context.Background(), run("outage-long", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1"}))
	kubetest.StartAPIServer(t)
	require.Error(t, err)
	require.True(t, IsTransient(err), "connection refused until the deadline: %v", err)
	require.ErrorContains(t, err, "connection refused")

	_, err = b.Provision(context.Background(), run("forbidden", "manifest", &events.KubernetesSUT{Manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}))
	require.NoError(t, err)
	none := newBackend(t, kubetest.As("no-role"), nil)
	_, err = none.Provision(context.Background(), run("forbidden2", "uc3-go", &events.KubernetesSUT{Image: "x"}))
	require.ErrorContains(t, err, "forbidden")
	require.False(t, IsTransient(err), "a missing permission is not transient")
}

// TestAManifestKeepsEveryFieldTheAPIServerKnows: the objects of a manifest
// are applied as written (plus labels, placement and env), so a field the
// API server knows is kept — here one of a custom resource's pod template
// that client-go's PodSpec lacks — and one it does not know is an error
// naming it, never silently dropped.
func TestAManifestKeepsEveryFieldTheAPIServerKnows(t *testing.T) {
	cs := kubetest.AdminClient(t)
	provtest.InstallCRD(t, "testdata/sutjob-crd.yaml")
	b := newBackend(t, kubetest.Admin, nil)
	ctx := context.Background()
	p := run("fields", "manifest", &events.KubernetesSUT{Env: map[string]string{"X": "1"}, Manifest: `apiVersion: greenflow.test/v1
kind: SUTJob
metadata: {name: job}
spec:
  template:
    spec:
      gangScheduling: {minMembers: 3}
      containers:
      - {name: app, image: img, checkpointDir: /ckpt}
`})
	_, err := b.Provision(ctx, p)
	require.NoError(t, err)
	got, err := provtest.Dynamic(t, kubetest.Admin).Resource(schema.GroupVersionResource{Group: "greenflow.test", Version: "v1", Resource: "sutjobs"}).
		Namespace(b.Namespace(p.RunID)).Get(ctx, "job", metav1.GetOptions{})
	require.NoError(t, err)
	spec, _, _ := unstructured.NestedMap(got.Object, "spec", "template", "spec")
	require.Equal(t, map[string]any{"minMembers": int64(3)}, spec["gangScheduling"])
	c := spec["containers"].([]any)[0].(map[string]any)
	require.Equal(t, "/ckpt", c["checkpointDir"])
	require.Equal(t, []any{map[string]any{"name": "X", "value": "1"}}, c["env"], "and the run's env is added")
	remove(t, b, p)

	typo := run("typo", "manifest", &events.KubernetesSUT{Manifest: deployment("sut", "{name: app, image: img, imagePullPolicyy: Always}")})
	_, err = b.Provision(ctx, typo)
	require.ErrorContains(t, err, `.spec.template.spec.containers[name="app"].imagePullPolicyy: field not declared in schema`,
		"the API server names the field it does not know")
	require.False(t, IsTransient(err), "a wrong manifest is not transient")
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(typo.RunID)))
}

// Run namespaces enforce Pod Security (the real kube-apiserver's admission):
// a manifest with a privileged pod is refused, the run fails at once with
// the API server's reason and leaves nothing; the reference processor runs
// under "restricted".
func TestPodSecurityRefusesAPrivilegedSUT(t *testing.T) {
	cs := cluster(t)
	core, logs := observer.New(zap.InfoLevel)
	b, err := New(testConfig(), Deps{REST: kubetest.Admin, Logger: zap.New(core)})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	ctx := context.Background()

	ok := run("psa-uc3", "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3-processor:v1", Replicas: 2})
	deployed(t, b, ok, nil)
	targets, err := b.Provision(ctx, ok)
	require.NoError(t, err, "the reference processor passes restricted")
	require.Zero(t, logs.FilterMessage("kubernetes API warning").Len(), "nothing to warn about")
	require.Len(t, targets, 2)
	n, err := cs.CoreV1().Namespaces().Get(ctx, b.Namespace(ok.RunID), metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "restricted", n.Labels["pod-security.kubernetes.io/enforce"])
	require.Equal(t, "v1.30", n.Labels["pod-security.kubernetes.io/enforce-version"])
	remove(t, b, ok)

	p := run("psa-privileged", "manifest", &events.KubernetesSUT{Manifest: deployment("miner",
		"{name: app, image: registry.local/miner:v1, securityContext: {privileged: true}}")})
	deployed(t, b, p, nil)
	start := time.Now()
	_, err = b.Provision(ctx, p)
	require.Error(t, err)
	t.Logf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
	require.Less(t, time.Since(start), 15*time.Second, "fails on the refusal, not at the 20 s timeout")
	require.ErrorContains(t, err, "deployment miner: the API server refuses its pods")
	require.ErrorContains(t, err, `violates PodSecurity "baseline:v1.30": privileged (container "app" must not set securityContext.privileged=true)`)
	require.True(t, kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)), "a refused run leaves nothing")
	pods, err := cs.CoreV1().Pods(b.Namespace(p.RunID)).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, pods.Items, "no privileged pod was ever admitted")
	warned := logs.FilterMessage("kubernetes API warning").All()
	require.NotEmpty(t, warned, "the API server's warnings are in the service's log")
	require.Contains(t, warned[0].ContextMap()["warning"], `would violate PodSecurity "restricted:v1.30"`)
}
