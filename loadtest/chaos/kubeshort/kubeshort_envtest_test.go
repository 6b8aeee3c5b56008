//go:build envtest

package kubeshort_test

import (
	"testing"
	"time"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/loadtest/chaos/chaostest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestChaosKubeShort is the kube segment of the chaos suite in short: the
// services as processes, the provisioner on a real kube-apiserver and etcd
// through its least-privileged service account's kubeconfig, two
// undisturbed kubernetes runs, then the API server stopped for 10 s while a
// run waits for readiness and again while a run tears down, and a control
// run. It fails on any violation of the invariants (no run stuck or lost, a
// failed run names the outage and is retried, no run namespace or topic
// left — see loadtest/README.md). The fault of the role without delete on
// namespaces is left to make chaos: it costs the scheduler's one-minute
// teardown bound by itself. GREENFLOW_CHAOS_SEED repeats a run.
func TestChaosKubeShort(t *testing.T) {
	chaostest.Run(t, "chaos-kube-short", 6*time.Minute, func(cfg *chaos.Config) {
		cfg.Faults = []string{chaos.FaultKube}
		cfg.KubeSchedule = []chaos.Pair{{Target: chaos.TargetAPIServer, Phase: "provisioning"}, {Target: chaos.TargetAPIServer, Phase: "teardown"}}
		cfg.KubeOutage = 10 * time.Second
		cfg.KubeControlEvery = 2 // one control, after both faults
		cfg.References = 2
		cfg.Configs = []string{"500"}
		cfg.RunBound = 2 * time.Minute
	})
}
