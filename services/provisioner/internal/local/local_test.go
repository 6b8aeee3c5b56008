package local_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
)

func cmd(run, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "e", RunID: run, SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}}}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestStartupFailureFailsTheProvision(t *testing.T) {
	b := local.New(local.Config{Node: "n1"}, zap.NewNop(), nil)
	_, err := b.Provision(context.Background(), cmd("r1", "echo cannot reach broker >&2; exit 3"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "exit status 3")
	require.Contains(t, err.Error(), "cannot reach broker")
}

func TestCrashDuringRunIsReportedWithStatusAndLastOutput(t *testing.T) {
	crashed := make(chan string, 1)
	b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond}, zap.NewNop(), func(_, run, reason string) { crashed <- run + ": " + reason })
	targets, err := b.Provision(context.Background(), cmd("r2", "echo starting; sleep 0.5; echo out of memory; exit 7"))
	require.NoError(t, err)
	require.Len(t, targets, 1)
	require.Equal(t, "n1", targets[0].Node)
	require.Equal(t, "sut", targets[0].Role)
	select {
	case msg := <-crashed:
		require.Contains(t, msg, "r2: exit status 7")
		require.Contains(t, msg, "out of memory")
	case <-time.After(10 * time.Second):
		t.Fatal("crash not reported")
	}
	isCrash, reason, err := b.Teardown(context.Background(), "r2")
	require.NoError(t, err)
	require.True(t, isCrash)
	require.Contains(t, reason, "exit status 7")
}

func TestTeardownKillsTheWholeProcessGroupAndProvisionIsIdempotent(t *testing.T) {
	pidFile := t.TempDir() + "/child.pid"
	b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond, StopTimeout: 2 * time.Second}, zap.NewNop(), nil)
	// The SUT starts a child of its own, as a JVM launcher script would.
	p := cmd("r3", "sleep 60 & echo $! > "+pidFile+"; wait")
	targets, err := b.Provision(context.Background(), p)
	require.NoError(t, err)
	again, err := b.Provision(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, targets, again, "a redelivered provision returns the same targets and starts nothing")
	var child int
	testenv.Eventually(t, 5*time.Second, "child pid written", func() bool {
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		return err == nil
	})
	require.True(t, alive(child))
	isCrash, _, err := b.Teardown(context.Background(), "r3")
	require.NoError(t, err)
	require.False(t, isCrash)
	testenv.Eventually(t, 5*time.Second, "child killed with its group", func() bool { return !alive(child) })
	// Tearing down again is harmless.
	_, _, err = b.Teardown(context.Background(), "r3")
	require.NoError(t, err)
	require.Empty(t, b.Running())
}

func TestUnknownTemplateParameterIsAClearError(t *testing.T) {
	b := local.New(local.Config{Node: "n1", UC3Command: []string{"/bin/true"}}, zap.NewNop(), nil)
	_, err := b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go", Params: map[string]string{"colour": "red"}}})
	require.ErrorContains(t, err, "unknown parameter sut.params.colour")
	_, err = b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-flink"}})
	require.ErrorContains(t, err, "cannot run on the local backend")
}
