package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestIsTransientTellsInfrastructureFromMistakes(t *testing.T) {
	t.Parallel()
	ns := schema.GroupResource{Resource: "namespaces"}
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"wrapped connection refused", fmt.Errorf("get namespace gf-x: %w", refused), true},
		{"timeout", context.DeadlineExceeded, true},
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"503", apierrors.NewServiceUnavailable("etcd leader changed"), true},
		{"500", apierrors.NewInternalError(errors.New("etcdserver: request timed out")), true},
		{"server timeout", apierrors.NewServerTimeout(ns, "list", 1), true},
		{"forbidden", apierrors.NewForbidden(ns, "gf-x", errors.New(`User "x" cannot delete resource "namespaces"`)), false},
		{"not found", apierrors.NewNotFound(ns, "gf-x"), false},
		{"conflict", apierrors.NewConflict(ns, "gf-x", errors.New("changed")), false},
		{"invalid", apierrors.NewBadRequest("spec.replicas: Invalid value"), false},
		{"apply of a field the schema lacks", apierrors.NewInternalError(errors.New(
			`failed to create typed patch object (ns/sut; apps/v1, Kind=Deployment): .spec.template.spec.x: field not declared in schema`)), false},
		{"marked", transientError{errors.New("x")}, true},
		{"other", errors.New("template manifest does not render"), false},
	}
	for _, c := range cases {
		require.Equal(t, c.want, IsTransient(c.err), c.name)
	}
}

// A restarted API server denies everything for a moment before its
// authorizer has loaded RBAC (the chaos suite's kube segment saw a run
// waiting for readiness fail as permanent on "clusterrole ... not found"
// 92–200 ms after an outage). Within authSettle of an outage a 403 or 401
// is the server still starting; later, or without an outage, it is an
// answer about the provisioner's rights.
func TestAuthorizationFailureRightAfterAnOutageIsTransient(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	b, err := New(Default(), Deps{REST: &rest.Config{Host: "https://127.0.0.1:1"}, Clock: clk})
	require.NoError(t, err)
	ns := schema.GroupResource{Resource: "namespaces"}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "uc3-processor",
		errors.New(`clusterrole.rbac.authorization.k8s.io "greenflow-provisioner" not found`))
	unauthorized := apierrors.NewUnauthorized("token not loaded yet")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

	require.False(t, b.transient(forbidden), "without an outage a 403 is an answer")
	require.True(t, b.transient(refused))
	clk.Step(200 * time.Millisecond)
	require.True(t, b.transient(forbidden), "a 403 200 ms after the outage: the authorizer is still loading")
	require.True(t, b.transient(unauthorized))
	clk.Step(authSettle)
	require.False(t, b.transient(forbidden), "a 403 that outlasts the settle time is the role's answer")
	require.False(t, b.transient(apierrors.NewForbidden(ns, "gf-x", errors.New(`cannot delete resource "namespaces"`))))
}

// A refusal says where to look: an admission policy's names the policy
// file, not the ClusterRole, which granted the verb.
func TestExplainNamesWhatRefused(t *testing.T) {
	deployments := schema.GroupResource{Group: "apps", Resource: "deployments"}
	rbac := explain(apierrors.NewForbidden(deployments, "sut", errors.New(`User "system:serviceaccount:greenflow:greenflow-provisioner" cannot create resource "deployments"`)))
	require.ErrorContains(t, rbac, "deploy/base/provisioner-rbac.yaml")
	policy := explain(apierrors.NewForbidden(deployments, "sut", errors.New(
		`ValidatingAdmissionPolicy 'greenflow-provisioner-run-objects' with binding 'greenflow-provisioner-run-objects' denied request: refused: CREATE deployments in namespace default`)))
	require.ErrorContains(t, policy, "deploy/base/provisioner-namespace-policy.yaml")
	require.NotContains(t, policy.Error(), "provisioner-rbac.yaml")
}
