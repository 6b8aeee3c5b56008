//go:build envtest

// Package e2ekube runs a whole experiment on the kubernetes backend: the dev
// stack (embedded NATS JetStream, kfake Kafka, a real ClickHouse) with the
// provisioner pointed, through a kubeconfig, at a real kube-apiserver and
// etcd (envtest). No kubelet can run here, so kubetest.Controllers plays the
// nodes (and the namespace controller): the SUT's pods are API objects, not processes, and process no
// events; everything around them is real.
package e2ekube

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/testenv"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
)

func TestMain(m *testing.M) {
	stop := kubetest.MustStart()
	code := testenv.Run(m)
	stop()
	os.Exit(code)
}

const consolidation = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: kube-consolidation}
spec:
  sut:
    template: uc3-go
    backend: kubernetes
    kubernetes:
      image: registry.local/uc3-processor:e2e
      replicas: 3
      placement: {strategy: consolidate, nodes: 1, nodeSelector: {pool: sut}}
  workload: {sensors: 200, periodMs: 1000, value: 10, format: avro}
  kafka: {partitions: 3}
  factors:
    - name: sut.kubernetes.placement.nodes
      values: ["1", "3"]
  repetitions: 1
  order: sequential
  phases: {baseline: 1s, warmup: 1s, measure: 2s, cooldown: 0s}
  meters: {source: model, interval: 200ms, model: {idleWatts: 1.48, maxWatts: 7.0}}
`

func TestConsolidationExperimentOnKubernetes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel) // the kubelets play on until the stack has stopped
	cs := kubetest.AdminClient(t)
	kubetest.EnsureNodes(t, cs, kubetest.Workers...)
	go (&kubetest.Controllers{CS: cs, Nodes: kubetest.Workers, Log: t}).Run(ctx)
	kubeconfig := kubetest.Kubeconfig(t, t.TempDir())

	o := devstacktest.Options(t)
	o.Provisioner = func(c *provisionerapp.Config) {
		c.Kubernetes = "on"
		c.Kube.Kubeconfig = kubeconfig
		c.Kube.PollInterval = 100 * time.Millisecond
		c.Kube.TeardownTimeout = time.Second
	}
	fastSampling := o.Collector
	o.Collector = func(c *collectorapp.Config) {
		fastSampling(c)
		// One meter per (pretend) node, as a collector per node would
		// have: each is this machine's CPU model, labelled estimated.
		for _, n := range kubetest.Workers {
			c.Sources = append(c.Sources, collectorapp.SourceConfig{Kind: "model", Node: n, IdleWatts: 1.48, MaxWatts: 7})
		}
	}
	st, b := devstacktest.Start(t, o)

	id, _ := devstacktest.Submit(ctx, t, b, []byte(consolidation), nil)
	obs := devstacktest.Observe(t, b, id, events.TypeRunProvisioned)
	final := obs.WaitFinal(t, 2*time.Minute, nil)

	rows, err := report.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	require.Equal(t, events.ExperimentStateDone, final)
	for _, r := range rows {
		require.Equal(t, events.RunStateDone, r.State, r.Reason)
		provisioned, ok := devstacktest.Last[*events.RunProvisioned](obs, r.RunID)
		require.True(t, ok, "run %s provisioned", r.RunID)
		targets := provisioned.Targets
		require.Len(t, targets, 3, "three pods, one container each")
		nodes := map[string]bool{}
		for _, tg := range targets {
			require.Equal(t, "pod", tg.Kind)
			require.NotEmpty(t, tg.ContainerID)
			nodes[tg.Node] = true
		}
		t.Logf("run %s nodes=%s: node energy %.2f J, SUT energy %.3f J, %v records sent (estimated: %v)", r.RunID,
			r.Factors["sut.kubernetes.placement.nodes"], r.Metrics["node_energy_j"], r.Metrics["sut_energy_j"], r.Metrics["records_sent_total"], r.Estimated)
		want := map[string]int{"1": 1, "3": 3}[r.Factors["sut.kubernetes.placement.nodes"]]
		require.Len(t, nodes, want, "run %s with factors %v: pods on %v", r.RunID, r.Factors, nodes)
		require.Greater(t, r.Metrics["records_sent_total"], 0.0, "the load ran")
		require.Greater(t, r.Metrics["node_energy_j"], 0.0, "the nodes were measured")
		require.True(t, r.Estimated)
		require.True(t, kubetest.NamespaceDeleted(t, cs, "gf-"+r.RunID), "torn down")
	}
}

// TestClusterStatusBeforeUp: `greenflow cluster status` on a cluster without
// GreenFlow names every component as not applied, and says what to run,
// with a non-zero exit (pkg/cluster's own test drives up and down).
func TestClusterStatusBeforeUp(t *testing.T) {
	code, out, errOut := clitest.Run("cluster", "status", "--kubeconfig", kubetest.Kubeconfig(t, t.TempDir()), "--secrets-dir", t.TempDir())
	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, errOut, "not every component is ready")
	for _, c := range []string{"greenflow/scheduler", "greenflow-collector/energy-collector", "greenflow/nats", "greenflow/clickhouse"} {
		require.Regexp(t, `(?m)^\s+\S+\s+`+regexp.QuoteMeta(c)+`\s+NOT READY: not applied \(run greenflow cluster up\)$`, out)
	}
	require.Contains(t, out, "kafka/greenflow                          NOT READY: the cluster does not serve Kafka kafka.strimzi.io/v1 (Strimzi's operator")
}
