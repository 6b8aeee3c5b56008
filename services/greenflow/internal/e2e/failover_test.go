package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

// TestTwoSchedulersAndAnalyzersSurviveTheDeathOfOne runs two scheduler and
// two analyzer processes against one dev stack — the horizontal scale the
// cluster deployment offers — and kills one scheduler with SIGKILL while the
// first run is measuring, never restarting it. Schedulers are peers, not a
// leader and a standby: each serves submissions and ticks every run, and
// every write to a run's record is revision-checked, so the survivor goes
// on with the run where the dead one left it, with no lease to wait out.
// The experiment must end done with every run provisioned, loaded, measured
// and analyzed exactly once. (That the concurrency limit holds across
// schedulers is TestConcurrencyLimitHoldsAcrossSchedulers.)
func TestTwoSchedulersAndAnalyzersSurviveTheDeathOfOne(t *testing.T) {
	ctx, st, b := startStack(t, 4*time.Minute, "scheduler", "analyzer")
	start := func(name string) *process {
		return startProcess(t, name, "--nats-url", st.Endpoints.NATSURL,
			"--nats-nkey-file", devstack.NATSCreds(st.StateDir(), name).NKeyFile, "--clickhouse-dsn", st.Endpoints.ClickHouseDSN,
			"--kafka-brokers", st.Endpoints.KafkaBrokers[0], "--metrics-addr", "", "--log-level", "warn")
	}
	victim, survivor := start("scheduler"), start("scheduler")
	analyzers := []*process{start("analyzer"), start("analyzer")}

	commands := []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunMeasured, events.TypeRunAnalyzed}
	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "5s"), append(commands, events.TypeRunState)...)
	firstRun := id + "-r0000"
	testenv.Eventually(t, time.Minute, "first run measuring", func() bool {
		return last(obs.RunStates(firstRun)) == events.RunStateMeasuring
	})
	exited, _ := victim.stop(syscall.SIGKILL, time.Minute)
	require.True(t, exited, "the killed scheduler exited")

	final := obs.WaitFinal(t, 3*time.Minute, func() {
		if !survivor.running() {
			t.Fatalf("the surviving scheduler exited: %s", survivor.output())
		}
		for _, a := range analyzers {
			if !a.running() {
				t.Fatalf("an analyzer exited: %s", a.output())
			}
		}
	})
	require.Equal(t, events.ExperimentStateDone, final, "with one scheduler killed mid-run")
	requireEveryRunDoneOnce(ctx, t, st.Store, id, n, obs, commands, firstRun)
}
