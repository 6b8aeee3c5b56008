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

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
