//go:build envtest

package kubetest_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func runNamespace(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "greenflow"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	two := int32(2)
	lbl := map[string]string{"app": "sut"}
	_, err = cs.AppsV1().Deployments(name).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sut"},
		Spec: appsv1.DeploymentSpec{Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sut", Image: "registry.local/sut:v1"}}}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

func ready(cs kubernetes.Interface, ns string) bool {
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), "sut", metav1.GetOptions{})
	return err == nil && d.Status.ReadyReplicas == 2
}

// TestControllersRunPodsHoldAndFinalize: the stand-ins make a run
// namespace's Deployment ready, keep a held namespace waiting until it is
// released, and remove a deleted namespace for good (as the namespace
// controller would) — also one deleted while the API server was down.
func TestControllersRunPodsHoldAndFinalize(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, kubetest.Workers...)
	c := &kubetest.Controllers{CS: cs, Nodes: kubetest.Workers, Log: t}
	go c.Run(ctx)

	runNamespace(t, cs, "gf-ctl-a")
	testenv.Eventually(t, 20*time.Second, "the first run's pods ready", func() bool { return ready(cs, "gf-ctl-a") })

	h := c.HoldNext()
	runNamespace(t, cs, "gf-ctl-b")
	<-h.Seen()
	require.Equal(t, "gf-ctl-b", h.Namespace())
	runNamespace(t, cs, "gf-ctl-c")
	testenv.Eventually(t, 20*time.Second, "a later run's pods ready", func() bool { return ready(cs, "gf-ctl-c") })
	pods, err := cs.CoreV1().Pods("gf-ctl-b").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, pods.Items, "a held namespace gets no pods")
	h.Release()
	testenv.Eventually(t, 20*time.Second, "the held run's pods ready once released", func() bool { return ready(cs, "gf-ctl-b") })

	gone := func(ns string) func() bool {
		return func() bool {
			_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}
	}
	require.NoError(t, cs.CoreV1().Namespaces().Delete(ctx, "gf-ctl-a", metav1.DeleteOptions{}))
	testenv.Eventually(t, 20*time.Second, "a deleted namespace gone", gone("gf-ctl-a"))

	require.NoError(t, cs.CoreV1().Namespaces().Delete(ctx, "gf-ctl-b", metav1.DeleteOptions{}))
	stopped := time.Now()
	kubetest.StopAPIServer(t)
	t.Logf("kube-apiserver stopped in %s", time.Since(stopped).Round(time.Millisecond))
	kubetest.StartAPIServer(t)
	testenv.Eventually(t, 20*time.Second, "a namespace deleted just before an outage gone after it", gone("gf-ctl-b"))
}

// TestServiceAccountKubeconfigIsLeastPrivileged: the provisioner's RBAC
// manifest applied as deployed, and a kubeconfig with the service
// account's token: what the role grants works, anything else is refused.
func TestServiceAccountKubeconfigIsLeastPrivileged(t *testing.T) {
	ctx := context.Background()
	cs := kubetest.AdminClient(t)
	rbac, err := kubetest.ApplyRBAC(ctx, cs, filepath.Join("..", "..", "deploy", "base", "provisioner-rbac.yaml"), "greenflow")
	require.NoError(t, err)
	require.Equal(t, "system:serviceaccount:greenflow:greenflow-provisioner", rbac.User())
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, kubetest.ServiceAccountKubeconfig(ctx, cs, kubetest.Admin, rbac.ServiceAccount, time.Hour, path))
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	require.NoError(t, err)
	sa, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "the role in effect", func() bool {
		_, err := sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err == nil
	})
	_, err = sa.CoreV1().Secrets("greenflow").List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "secrets are not the provisioner's business: %v", err)
	require.Contains(t, err.Error(), rbac.User())
}
