package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// RBAC is what a file such as deploy/base/provisioner-rbac.yaml declares:
// a service account, the ClusterRole it gets and the binding.
type RBAC struct {
	ServiceAccount *corev1.ServiceAccount
	Role           *rbacv1.ClusterRole
	Binding        *rbacv1.ClusterRoleBinding
}

// ApplyRBAC creates the service account (in namespace, created when
// missing), ClusterRole and ClusterRoleBinding of the manifest at path —
// the file as it is deployed — and returns them as created.
func ApplyRBAC(ctx context.Context, cs kubernetes.Interface, path, namespace string) (RBAC, error) {
	var out RBAC
	b, err := os.ReadFile(path)
	if err != nil {
		return out, fmt.Errorf("read RBAC manifest: %w", err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return out, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			out.ServiceAccount = o
		case *rbacv1.ClusterRole:
			out.Role = o
		case *rbacv1.ClusterRoleBinding:
			out.Binding = o
		default:
			return out, fmt.Errorf("%s: document %d: a %T; expected a ServiceAccount, ClusterRole or ClusterRoleBinding", path, i, obj)
		}
	}
	if out.ServiceAccount == nil || out.Role == nil || out.Binding == nil {
		return out, fmt.Errorf("%s: expected a ServiceAccount, a ClusterRole and a ClusterRoleBinding", path)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil &&
		!apierrors.IsAlreadyExists(err) {
		return out, fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	out.ServiceAccount.Namespace = namespace
	if out.ServiceAccount, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx, out.ServiceAccount, metav1.CreateOptions{}); err != nil {
		return out, fmt.Errorf("create service account %s/%s: %w", namespace, out.ServiceAccount.Name, err)
	}
	if out.Role, err = cs.RbacV1().ClusterRoles().Create(ctx, out.Role, metav1.CreateOptions{}); err != nil {
		return out, fmt.Errorf("create cluster role: %w", err)
	}
	for i := range out.Binding.Subjects {
		if out.Binding.Subjects[i].Kind == rbacv1.ServiceAccountKind {
			out.Binding.Subjects[i].Namespace = namespace
		}
	}
	if out.Binding, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, out.Binding, metav1.CreateOptions{}); err != nil {
		return out, fmt.Errorf("create cluster role binding: %w", err)
	}
	return out, nil
}

// User is the user name a service account authenticates as.
func (r RBAC) User() string {
	return "system:serviceaccount:" + r.ServiceAccount.Namespace + ":" + r.ServiceAccount.Name
}

// ServiceAccountKubeconfig writes a kubeconfig to path that authenticates
// as the service account with a token from the TokenRequest API, valid for
// ttl — what a pod of that service account would hold, and nothing more.
func ServiceAccountKubeconfig(ctx context.Context, cs kubernetes.Interface, rc *rest.Config, sa *corev1.ServiceAccount, ttl time.Duration,
	path string) error {
	secs := int64(ttl.Seconds())
	tok, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("request a token for service account %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	return WriteKubeconfig(path, rc, clientcmdapi.AuthInfo{Token: tok.Status.Token})
}
