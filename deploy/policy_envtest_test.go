//go:build envtest

package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

const runObjectsPolicy = "greenflow-provisioner-run-objects"

var kafkaTopics = schema.GroupVersionResource{Group: "kafka.strimzi.io", Version: "v1", Resource: "kafkatopics"}

// applyProvisionerRights applies, as deployed (the base rendered), the
// provisioner's service account, ClusterRole and binding and its
// admission policies, and waits until the API server enforces the
// run-objects policy: a (dry-run) Deployment in `default` is refused by it.
// Admission policies take effect a moment after they are created.
func applyProvisionerRights(t *testing.T, a *kubetest.Applier, sa kubernetes.Interface) {
	t.Helper()
	objs, err := kubetest.Decode(render(t, configured(t, "base")), "base")
	require.NoError(t, err)
	var mine []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			if strings.HasPrefix(o.GetName(), "greenflow-provisioner") {
				mine = append(mine, o)
			}
		case "Namespace":
			if o.GetName() == "greenflow" {
				mine = append([]*unstructured.Unstructured{o}, mine...)
			}
		}
	}
	require.Len(t, mine, 8, "the namespace, service account, role, binding, two policies and their bindings")
	require.NoError(t, a.Apply(context.Background(), mine))
	testenv.Eventually(t, 30*time.Second, "the run-objects policy in effect", func() bool {
		_, err := sa.AppsV1().Deployments("default").Create(context.Background(), deployment("policy-probe"),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), runObjectsPolicy)
	})
}

func deployment(name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.local/app:v1"}}}}}}
}

func kafkaTopic(name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic",
		"metadata": map[string]any{"name": name}, "spec": map[string]any{"partitions": int64(1)}}}
	u.SetLabels(labels)
	return u
}

// The provisioner's ClusterRole reaches every namespace; deploy/base's
// admission policy narrows it on the real API server. As the provisioner's
// service account: creating or changing a Deployment or Service in
// `default`, `kube-system` or GreenFlow's own namespace is refused by the
// policy, and so is changing, deleting or adopting a KafkaTopic that is not
// GreenFlow's; in a run namespace (labelled as GreenFlow's) it creates and
// changes them, and it creates, changes and deletes its own labelled
// KafkaTopics. The cluster's admin is not restrained.
func TestTheProvisionerWritesOnlyInItsRunNamespaces(t *testing.T) {
	a, _ := applier(t)
	ctx := context.Background()
	admin := kubetest.AdminClient(t)
	rc := kubetest.As("greenflow-provisioner")
	sa, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	saDyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	applyProvisionerRights(t, a, sa)

	refused := func(err error, what string) {
		t.Helper()
		require.Error(t, err, what)
		require.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "%s: %v", what, err)
		require.ErrorContains(t, err, runObjectsPolicy, "%s: refused by the policy, not by RBAC", what)
		t.Logf("%s: %v", what, err)
	}
	for _, ns := range []string{"default", "kube-system", "greenflow"} {
		_, err := sa.AppsV1().Deployments(ns).Create(ctx, deployment("intruder"), metav1.CreateOptions{})
		refused(err, "create a Deployment in "+ns)
		_, err = sa.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "intruder"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		refused(err, "create a Service in "+ns)
	}
	// An object someone else made, in a namespace that is not a run's.
	_, err = admin.AppsV1().Deployments("default").Create(ctx, deployment("precious"), metav1.CreateOptions{})
	require.NoError(t, err, "the admin is not restrained")
	_, err = sa.AppsV1().Deployments("default").Patch(ctx, "precious", types.MergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.local/evil:v1"}]}}}}`), metav1.PatchOptions{})
	refused(err, "change a Deployment in default")

	// A run's namespace, created by the provisioner as it does.
	run := "gf-policy-objects-r0000"
	_, err = sa.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: run, Labels: map[string]string{
		"app.kubernetes.io/managed-by": "greenflow", "pod-security.kubernetes.io/enforce": "baseline",
		"pod-security.kubernetes.io/enforce-version": "v1.37"}}}, metav1.CreateOptions{})
	require.NoError(t, err, "create a run namespace")
	_, err = sa.AppsV1().Deployments(run).Create(ctx, deployment("sut"), metav1.CreateOptions{})
	require.NoError(t, err, "create a Deployment in a run namespace")
	_, err = sa.AppsV1().Deployments(run).Patch(ctx, "sut", types.MergePatchType, []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{})
	require.NoError(t, err, "change a Deployment in a run namespace")
	_, err = sa.CoreV1().Services(run).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "sut"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	require.NoError(t, err, "create a Service in a run namespace")

	// KafkaTopics, in the Kafka's namespace.
	_, err = admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kafka-policy"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	topics := saDyn.Resource(kafkaTopics).Namespace("kafka-policy")
	adminDyn, err := dynamic.NewForConfig(kubetest.Admin)
	require.NoError(t, err)
	_, err = adminDyn.Resource(kafkaTopics).Namespace("kafka-policy").Create(ctx, kafkaTopic("orders", nil), metav1.CreateOptions{})
	require.NoError(t, err, "a topic of another team's")
	err = topics.Delete(ctx, "orders", metav1.DeleteOptions{})
	refused(err, "delete a KafkaTopic that is not GreenFlow's")
	adopt := []byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"greenflow"}}}`)
	_, err = topics.Patch(ctx, "orders", types.MergePatchType, adopt, metav1.PatchOptions{})
	refused(err, "adopt a KafkaTopic by labelling it")
	_, err = topics.Create(ctx, kafkaTopic("unlabelled", nil), metav1.CreateOptions{})
	refused(err, "create a KafkaTopic without GreenFlow's label")

	own := map[string]string{"app.kubernetes.io/managed-by": "greenflow", "greenflow.dev/run": "r0000"}
	_, err = topics.Create(ctx, kafkaTopic("gf-r0000-input", own), metav1.CreateOptions{})
	require.NoError(t, err, "create its own KafkaTopic")
	_, err = topics.Patch(ctx, "gf-r0000-input", types.MergePatchType, []byte(`{"spec":{"partitions":2}}`), metav1.PatchOptions{})
	require.NoError(t, err, "change its own KafkaTopic")
	_, err = topics.Patch(ctx, "gf-r0000-input", types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/metadata/labels/app.kubernetes.io~1managed-by"}]`), metav1.PatchOptions{})
	refused(err, "drop GreenFlow's label from its own KafkaTopic")
	require.NoError(t, topics.Delete(ctx, "gf-r0000-input", metav1.DeleteOptions{}), "delete its own KafkaTopic")
	_, err = adminDyn.Resource(kafkaTopics).Namespace("kafka-policy").Get(ctx, "orders", metav1.GetOptions{})
	require.NoError(t, err, "the other team's topic is still there")
}
