package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// TestSchedulerKill9MidRunResumes kills the scheduler process with SIGKILL
// while the first run is measuring, starts it again, and checks that the
// experiment finishes with every run done exactly once: none lost, none
// duplicated, each provisioned, measured and analyzed once.
func TestSchedulerKill9MidRunResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, b := startStack(t, "scheduler")
	startScheduler := func() *process {
		return startProcess(t, "scheduler", "--nats-url", st.Endpoints.NATSURL, "--clickhouse-dsn", st.Endpoints.ClickHouseDSN,
			"--kafka-brokers", st.Endpoints.KafkaBrokers[0], "--metrics-addr", "", "--log-level", "warn")
	}
	first := startScheduler()

	commands := []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunMeasured, events.TypeRunAnalyzed}
	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "5s"), append(commands, events.TypeRunState)...)
	firstRun := id + "-r0000"
	testenv.Eventually(t, time.Minute, "first run measuring", func() bool {
		return last(obs.RunStates(firstRun)) == events.RunStateMeasuring
	})
	exited, _ := first.stop(syscall.SIGKILL, time.Minute) // no drain, no goodbye
	require.True(t, exited, "the killed scheduler exited")
	startScheduler()

	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 3*time.Minute, nil), "after the restart")
	rows, err := cli.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	require.Len(t, rows, n, "no run lost or added")
	for _, r := range rows {
		require.Equal(t, events.RunStateDone, r.State, r.Reason)
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		for _, typ := range commands {
			require.Equal(t, 1, obs.Count(typ, r.RunID), "%s of %s stored once (duplicates are dropped by Nats-Msg-Id)", typ, r.RunID)
		}
	}
	require.Equal(t, []string{events.RunStateProvisioning, events.RunStateBaseline, events.RunStateWarmup, events.RunStateMeasuring,
		events.RunStateCooldown, events.RunStateTeardown, events.RunStateAnalyzing, events.RunStateDone}, obs.RunStates(firstRun))
}

// last is the last of states; "" when there is none.
func last(states []string) string {
	if len(states) == 0 {
		return ""
	}
	return states[len(states)-1]
}
