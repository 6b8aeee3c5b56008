//go:build envtest

package provtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// What the provisioner's envtest tests share on top of pkg/kubetest: the
// objects a test sets up in the one API server of its test binary (CRDs,
// namespaces, the deployed RBAC, a role cut to measure) and a kubelet that
// lives as long as the test.

// RBACManifest is the provisioner's least-privilege ClusterRole as deployed,
// relative to a package directory under services/provisioner/internal.
const RBACManifest = "../../../../deploy/base/provisioner-rbac.yaml"

// NamespacePolicyManifest is the admission policy that narrows the
// ClusterRole's namespace rights to the namespaces the provisioner manages.
const NamespacePolicyManifest = "../../../../deploy/base/provisioner-namespace-policy.yaml"

// ServiceAccount is the service account RBACManifest binds, in namespace
// greenflow; kubetest.As(ServiceAccount) acts as it.
const ServiceAccount = "greenflow-provisioner"

// StartKubelet runs a kubetest.Kubelet for namespace ns on nodes until the
// test ends; mod, when set, changes it first (Fail, Unschedulable,
// Restarts).
func StartKubelet(tb testing.TB, cs kubernetes.Interface, ns string, nodes []string, mod func(*kubetest.Kubelet)) {
	k := &kubetest.Kubelet{CS: cs, NS: ns, Nodes: nodes}
	if mod != nil {
		mod(k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	k.Run(ctx, tb)
}

var rbac struct {
	once sync.Once
	got  kubetest.RBAC
	err  error
}

// ApplyRBAC applies RBACManifest (service account greenflow/
// greenflow-provisioner, its ClusterRole and binding) and
// NamespacePolicyManifest — the provisioner's rights as deployed — once per
// test binary — the objects stay for the binary's other tests — and
// returns the RBAC objects once the policy is in effect.
func ApplyRBAC(tb testing.TB, cs kubernetes.Interface) kubetest.RBAC {
	tb.Helper()
	rbac.once.Do(func() {
		rbac.got, rbac.err = kubetest.ApplyRBAC(context.Background(), cs, RBACManifest, "greenflow")
		if rbac.err == nil {
			rbac.err = applyNamespacePolicy(cs)
		}
	})
	if rbac.err != nil {
		tb.Fatal(rbac.err)
	}
	return rbac.got
}

// applyNamespacePolicy applies NamespacePolicyManifest and waits until the
// API server enforces it: the provisioner's service account is refused, by
// the policy, a (dry-run) namespace without the managed label. Admission
// policies take effect asynchronously, a moment after they are created.
func applyNamespacePolicy(cs kubernetes.Interface) error {
	ctx := context.Background()
	raw, err := os.ReadFile(NamespacePolicyManifest)
	if err != nil {
		return fmt.Errorf("read the namespace policy: %w", err)
	}
	objs, err := kubetest.Decode(raw, NamespacePolicyManifest)
	if err != nil {
		return err
	}
	a, err := kubetest.NewApplier(kubetest.Admin)
	if err != nil {
		return err
	}
	if err := a.Apply(ctx, objs); err != nil {
		return err
	}
	sa, err := kubernetes.NewForConfig(kubetest.As(ServiceAccount))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := sa.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe"}},
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "greenflow-provisioner-namespaces") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the namespace policy is not in effect after 30 s: an unlabelled namespace got %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the API server for the policy's effect, bounded above
	}
}

// BindRole grants service account greenflow/sa exactly rules (a
// ClusterRole and ClusterRoleBinding named sa, deleted when the test ends)
// and waits until the authorizer applies them: sa may probeVerb
// probeResource (a verb the rules grant). It returns the role, for the
// test to change.
func BindRole(tb testing.TB, cs kubernetes.Interface, sa string, rules []rbacv1.PolicyRule, probeVerb, probeResource string) *rbacv1.ClusterRole {
	tb.Helper()
	ctx := context.Background()
	role, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: rules}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: "greenflow"}}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), sa, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), sa, metav1.DeleteOptions{})
	})
	testenv.Eventually(tb, 10*time.Second, "role "+sa+" in effect", func() bool {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:greenflow:" + sa, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: probeVerb, Resource: probeResource}}}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed
	})
	return role
}

// Dynamic is a dynamic client for rc.
func Dynamic(tb testing.TB, rc *rest.Config) dynamic.Interface {
	tb.Helper()
	d, err := dynamic.NewForConfig(rc)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// InstallCRD creates the CustomResourceDefinition of a manifest (unless it
// is there) and waits until it is established.
func InstallCRD(tb testing.TB, path string) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var u unstructured.Unstructured
	if err := utilyaml.Unmarshal(raw, &u.Object); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	crds := Dynamic(tb, kubetest.Admin).Resource(kubetest.CRDResource)
	if _, err = crds.Create(context.Background(), &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	testenv.Eventually(tb, 30*time.Second, "CRD established", func() bool {
		return kubetest.CRDEstablished(context.Background(), Dynamic(tb, kubetest.Admin), u.GetName())
	})
}

// UninstallCRD deletes a CustomResourceDefinition (if there) and waits
// until it is gone.
func UninstallCRD(tb testing.TB, name string) {
	tb.Helper()
	crds := Dynamic(tb, kubetest.Admin).Resource(kubetest.CRDResource)
	err := crds.Delete(context.Background(), name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		tb.Fatal(err)
	}
	testenv.Eventually(tb, 30*time.Second, "CRD removed", func() bool {
		_, err := crds.Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// EnsureNamespace creates a namespace unless it is there.
func EnsureNamespace(tb testing.TB, cs kubernetes.Interface, name string) {
	tb.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
}
