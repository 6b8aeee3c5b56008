package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// TestSchedulerKill9MidRunResumes kills the scheduler process with SIGKILL
// while the first run is measuring, starts it again, and checks that the
// experiment finishes with every run done exactly once: none lost, none
// duplicated, each provisioned, measured and analyzed once.
func TestSchedulerKill9MidRunResumes(t *testing.T) {
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, b := startStack(t, "scheduler")

	startScheduler := func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, "scheduler"), "--nats-url", st.Endpoints.NATSURL, "--clickhouse-dsn", st.Endpoints.ClickHouseDSN,
			"--kafka-brokers", st.Endpoints.KafkaBrokers[0], "--metrics-addr", "", "--log-level", "warn")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
		return cmd
	}
	first := startScheduler()

	var mu sync.Mutex
	counts := map[events.Type]map[string]int{}
	states := map[string][]string{}
	go func() {
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunMeasured,
			events.TypeRunAnalyzed, events.TypeRunState}, func(d bus.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			_, run := d.Msg.IDs()
			if counts[d.Msg.MessageType()] == nil {
				counts[d.Msg.MessageType()] = map[string]int{}
			}
			counts[d.Msg.MessageType()][run]++
			if s, ok := d.Msg.(*events.RunState); ok {
				states[run] = append(states[run], s.State)
			}
		})
	}()

	id, n := submitExample(ctx, t, b, []string{"spec.phases.baseline=1s", "spec.phases.warmup=1s", "spec.phases.measure=5s",
		"spec.phases.cooldown=0s", "spec.meters.interval=200ms"})
	obs := observe(ctx, t, b, id)
	firstRun := id + "-r0000"
	testenv.Eventually(t, time.Minute, "first run measuring", func() bool {
		mu.Lock()
		defer mu.Unlock()
		s := states[firstRun]
		return len(s) > 0 && s[len(s)-1] == "measuring"
	})
	require.NoError(t, first.Process.Kill()) // SIGKILL: no drain, no goodbye
	_ = first.Wait()
	startScheduler()

	testenv.Eventually(t, 3*time.Minute, "experiment to finish after the restart", func() bool { return obs.state() != "" })
	require.Equal(t, "done", obs.state())
	rows, err := cli.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	require.Len(t, rows, n, "no run lost or added")
	mu.Lock()
	defer mu.Unlock()
	for _, r := range rows {
		require.Equal(t, "done", r.State, r.Reason)
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		for _, typ := range []events.Type{events.TypeRunProvision, events.TypeLoadStart, events.TypeRunMeasured, events.TypeRunAnalyzed} {
			require.Equal(t, 1, counts[typ][r.RunID], "%s of %s stored once (duplicates are dropped by Nats-Msg-Id)", typ, r.RunID)
		}
	}
	require.Equal(t, []string{"provisioning", "baseline", "warmup", "measuring", "cooldown", "teardown", "analyzing", "done"}, states[firstRun])
}
