//go:build envtest

package kubeshort_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lineLogger turns the suite's progress lines into test log lines.
type lineLogger struct{ t *testing.T }

func (l lineLogger) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("GREENFLOW_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, "GREENFLOW_CHAOS_SEED: expected an integer")
		seed = v
	}
	results := filepath.Join(os.TempDir(), fmt.Sprintf("greenflow-chaos-kube-short-%d", seed))
	require.NoError(t, os.RemoveAll(results))
	cfg := chaos.DefaultConfig(root)
	cfg.BinDir = filepath.Join(t.TempDir(), "bin")
	cfg.ResultsDir = results
	cfg.Seed = seed
	cfg.ClickHouseBase = testenv.ClickHouseBase(t)
	cfg.Faults = []string{chaos.FaultKube}
	cfg.KubeSchedule = []chaos.Pair{{Target: chaos.TargetAPIServer, Phase: "provisioning"}, {Target: chaos.TargetAPIServer, Phase: "teardown"}}
	cfg.KubeOutage = 10 * time.Second
	cfg.KubeControlEvery = 2 // one control, after both faults
	cfg.References = 2
	cfg.Configs = []string{"500"}
	cfg.RunBound = 2 * time.Minute
	cfg.Progress = lineLogger{t}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	t.Logf("seed %d (GREENFLOW_CHAOS_SEED=%d repeats it); report in %s", seed, seed, results)
	rep, err := chaos.Run(ctx, cfg)
	require.NoError(t, err, "the chaos harness could not do its job (report in %s)", results)
	for _, v := range rep.Violations() {
		t.Errorf("violation: %s", v)
	}
	if t.Failed() {
		t.Logf("report, per-run facts and every process's log: %s", results)
	} else {
		_ = os.RemoveAll(results)
	}
}
