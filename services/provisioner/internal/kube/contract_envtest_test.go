//go:build envtest

package kube

import (
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
)

// TestContract runs the suite every backend passes (see provtest.Contract)
// against the envtest API server: kubetest.Kubelet plays the nodes (each
// container restarted once while starting, which is no crash), the crash
// is an OOM kill with restarts, a new instance another backend on the same
// cluster; a run is removed once its namespace is deleted.
func TestContract(t *testing.T) {
	cs := cluster(t)
	provtest.Contract(t, provtest.Harness{
		Name: "kubernetes",
		New: func(tb testing.TB) provtest.Backend {
			return newBackend(tb, kubetest.Admin, func(c *Config) { c.CrashPoll = 100 * time.Millisecond })
		},
		Run: func(name string) events.RunProvision {
			return run(name, "uc3-go", &events.KubernetesSUT{Image: "registry.local/uc3:v1", Replicas: 2})
		},
		Deploy: func(tb testing.TB, b provtest.Backend, p events.RunProvision) {
			deployed(tb, b.(*Backend), p, func(k *kubetest.Kubelet) { k.Restarts = 1 })
		},
		Crash: func(tb testing.TB, b provtest.Backend, p events.RunProvision, targets []events.Target) string {
			kubetest.Crash(tb, cs, b.(*Backend).Namespace(p.RunID), targets[1].Pod)
			return "pod " + targets[1].Pod + " container uc3-processor restarted 2 time(s), last exit code 137 (OOMKilled)"
		},
		CrashReason: "container uc3-processor restarted 2 time(s), last exit code 137 (OOMKilled)",
		Gone: func(tb testing.TB, b provtest.Backend, p events.RunProvision, _ []events.Target) bool {
			return kubetest.NamespaceDeleted(tb, cs, b.(*Backend).Namespace(p.RunID))
		},
	})
}
