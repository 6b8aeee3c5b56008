package app

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestKubernetesBackendWithoutACluster(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	b := testenv.Bus(t, testenv.NATS(t), "provisioner")
	d := svcmain.Deps{Bus: b, Logger: zap.NewNop()}

	c := Default()
	c.Kubernetes = "on"
	_, err := New(c, d)
	require.ErrorContains(t, err, "kubernetes backend: no kubeconfig", "on: refuse to start without a cluster")

	c.Kubernetes = "auto"
	comp, err := New(c, d)
	require.NoError(t, err, "auto: start with the local backend only")
	be, ok := comp.Backend("kubernetes")
	require.True(t, ok)
	_, err = be.Provision(context.Background(), events.RunProvision{RunID: "r"})
	require.ErrorContains(t, err, "kubernetes backend: no kubeconfig", "runs asking for it fail with the reason")

	c.Kubernetes = "off"
	comp, err = New(c, d)
	require.NoError(t, err)
	_, ok = comp.Backend("kubernetes")
	require.False(t, ok)
}
