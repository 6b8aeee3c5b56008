//go:build envtest

package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
)

// TestEveryClusterRoleRuleIsNeeded: the ClusterRole lists exactly what the
// backend uses. A scenario exercising every operation (a Flink run
// consolidated onto a node, Strimzi topics, teardown, a run found after a
// restart, an unschedulable run's reason with its warning events) succeeds
// under the whole role, and fails under the role minus any one verb.
func TestEveryClusterRoleRuleIsNeeded(t *testing.T) {
	cs := cluster(t)
	provtest.InstallCRD(t, "testdata/kafkatopic-crd.yaml")
	provtest.EnsureNamespace(t, cs, "kafka")
	role := provtest.ApplyRBAC(t, cs).Role
	strimziOperator(t, "kafka")

	type cut struct{ group, resource, verb string }
	cuts := []cut{{}} // the whole role first
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				cuts = append(cuts, cut{r.APIGroups[0], res, v})
			}
		}
	}
	for i, c := range cuts {
		name := "whole"
		if c.verb != "" {
			name = "without-" + c.verb + "-" + c.resource
		}
		t.Run(name, func(t *testing.T) {
			sa := fmt.Sprintf("rbac-cut-%d", i)
			probeVerb, probeResource := "list", "namespaces" // a verb every cut but one keeps
			if c.verb == probeVerb && c.resource == probeResource {
				probeVerb, probeResource = "list", "nodes"
			}
			provtest.BindRole(t, cs, sa, without(role, c.group, c.resource, c.verb), probeVerb, probeResource)
			err := scenario(t, kubetest.As(sa), fmt.Sprintf("cut%d", i))
			if c.verb == "" {
				require.NoError(t, err, "everything the backend does is granted")
				return
			}
			require.Error(t, err, "%s %s is granted but nothing needs it", c.verb, c.resource)
			t.Logf("without %s %s: %v", c.verb, c.resource, err)
		})
	}
}

func without(role *rbacv1.ClusterRole, group, resource, verb string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			verbs := slices.Clone(r.Verbs)
			if r.APIGroups[0] == group && res == resource {
				verbs = slices.DeleteFunc(verbs, func(v string) bool { return v == verb })
			}
			if len(verbs) > 0 {
				out = append(out, rbacv1.PolicyRule{APIGroups: r.APIGroups, Resources: []string{res}, Verbs: verbs})
			}
		}
	}
	return out
}

// scenario uses every permission the backend needs, as the configuration rc
// authenticates; it returns the first failure.
func scenario(t *testing.T, rc *rest.Config, suffix string) error {
	t.Helper()
	cfg := testConfig()
	cfg.ReadyTimeout, cfg.UnschedulableGrace, cfg.TeardownTimeout, cfg.PollInterval = 10*time.Second, time.Millisecond, 300*time.Millisecond, 50*time.Millisecond
	cfg.StrimziKafka = "kafka/my-cluster"
	b, err := New(cfg, Deps{REST: rc})
	if err != nil {
		return err
	}
	ctx := context.Background()
	p := run("rbac-"+suffix, "uc3-flink", &events.KubernetesSUT{Image: "ghcr.io/cau-se/theodolite-uc3-flink:latest", Replicas: 2,
		Placement: events.Placement{Strategy: "consolidate", Nodes: 1}})
	deployed(t, b, p, nil)
	if err := b.CreateTopics(ctx, p); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	if _, err := b.Provision(ctx, p); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	if _, err := b.Runs(ctx); err != nil {
		return fmt.Errorf("runs: %w", err)
	}
	if _, _, err := b.Remove(ctx, p.RunID, nil); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	cs := kubetest.AdminClient(t)
	if !kubetest.NamespaceDeleted(t, cs, b.Namespace(p.RunID)) {
		return errors.New("teardown left the namespace")
	}
	if err := b.DeleteTopics(ctx, p.RunID); err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	left, err := kafkaTopics(t, "kafka").List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + p.RunID})
	if err != nil {
		return err
	}
	if len(left.Items) > 0 {
		return errors.New("teardown left KafkaTopics")
	}
	un := run("rbac-unsched-"+suffix, "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1"})
	deployed(t, b, un, func(k *kubetest.Kubelet) { k.Unschedulable = "0/3 nodes are available: 3 Insufficient memory." })
	_, err = b.Provision(ctx, un)
	switch {
	case err == nil:
		return errors.New("an unschedulable run was provisioned")
	case !strings.Contains(err.Error(), "unschedulable: 0/3 nodes"):
		return fmt.Errorf("unschedulable run: %w", err)
	case !strings.Contains(err.Error(), "warning events: FailedScheduling"):
		return fmt.Errorf("the reason lacks the warning events: %w", err)
	}
	if !kubetest.NamespaceDeleted(t, cs, b.Namespace(un.RunID)) {
		return errors.New("a failed provision left its namespace")
	}
	return nil
}

// TestTheProvisionerManagesOnlyItsOwnNamespaces: RBAC grants the provisioner
// every namespace; deploy/base's admission policy narrows it, on the real
// API server, to the namespaces labelled as GreenFlow's. As the
// provisioner's service account: an unmanaged namespace can be neither
// deleted, relabelled nor adopted; a namespace it creates or changes must
// keep the managed label and a pinned Pod Security level of restricted or
// baseline; and a whole run (create, relabel at readiness, delete) works.
func TestTheProvisionerManagesOnlyItsOwnNamespaces(t *testing.T) {
	cs := cluster(t)
	provtest.ApplyRBAC(t, cs) // with the namespace policy, as deployed
	provtest.InstallCRD(t, "testdata/kafkatopic-crd.yaml")
	provtest.EnsureNamespace(t, cs, "kafka")
	strimziOperator(t, "kafka")
	ctx := context.Background()
	sa, err := kubernetes.NewForConfig(kubetest.As(provtest.ServiceAccount))
	require.NoError(t, err)
	provtest.EnsureNamespace(t, cs, "precious")
	const policy = "greenflow-provisioner-namespaces"
	refused := func(err error, what string) {
		t.Helper()
		require.Error(t, err, what)
		require.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "%s: %v", what, err)
		require.ErrorContains(t, err, policy, what)
		t.Logf("%s: %v", what, err)
	}

	err = sa.CoreV1().Namespaces().Delete(ctx, "precious", metav1.DeleteOptions{})
	refused(err, "delete an unmanaged namespace")
	adopt := corev1ac.Namespace("precious").WithLabels(map[string]string{LabelManagedBy: ManagedBy})
	_, err = sa.CoreV1().Namespaces().Apply(ctx, adopt, metav1.ApplyOptions{FieldManager: "greenflow-provisioner", Force: true})
	refused(err, "adopt an unmanaged namespace by labelling it")
	_, err = sa.CoreV1().Namespaces().Get(ctx, "precious", metav1.GetOptions{})
	require.NoError(t, err, "still there")

	own := "gf-policy-own"
	lbl := merge(map[string]string{LabelManagedBy: ManagedBy}, podSecurityLabels("baseline"))
	_, err = sa.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace("gf-policy-bare"), metav1.ApplyOptions{FieldManager: "greenflow-provisioner"})
	refused(err, "create a namespace without the managed label")
	_, err = sa.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace("gf-policy-priv").WithLabels(merge(lbl,
		map[string]string{LabelPodSecurityEnforce: "privileged"})), metav1.ApplyOptions{FieldManager: "greenflow-provisioner"})
	refused(err, "create a namespace that admits privileged pods")
	_, err = sa.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(own).WithLabels(lbl), metav1.ApplyOptions{FieldManager: "greenflow-provisioner"})
	require.NoError(t, err, "create a managed namespace")
	_, err = sa.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(own).WithLabels(map[string]string{LabelManagedBy: ManagedBy}),
		metav1.ApplyOptions{FieldManager: "greenflow-provisioner", Force: true})
	refused(err, "drop the Pod Security labels of its own namespace")
	_, err = sa.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(own).WithLabels(podSecurityLabels("baseline")),
		metav1.ApplyOptions{FieldManager: "greenflow-provisioner", Force: true})
	refused(err, "drop the managed label of its own namespace")
	require.NoError(t, sa.CoreV1().Namespaces().Delete(ctx, own, metav1.DeleteOptions{}), "delete its own namespace")

	require.NoError(t, scenario(t, kubetest.As(provtest.ServiceAccount), "policy"), "a whole run under the role and the policy")
}
