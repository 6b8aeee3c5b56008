package cli_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A cancelled experiment's runs are cancelled, not failed: `greenflow
// status` and `greenflow list` say so (they used to say "0/2 runs done, 2
// failed" and FAILED 2). A real scheduler on real NATS and ClickHouse;
// nothing answers its provision commands, so the runs wait until the
// cancel. The CLI uses the scheduler's HTTP API with an operator token
// it was given by `greenflow token create`.
func TestStatusAndListCountCancelledRunsApart(t *testing.T) {
	t.Parallel()
	url := testenv.NATS(t)
	cfg := schedulerapp.Service.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	apiURL := serveScheduler(t, url, cfg, testenv.Store(t))

	dir := t.TempDir()
	specFile := waitingSpec(t, dir, "cli-cancel")
	// A deployment's first admin token is written over NATS; the admin
	// makes the operator's through the API.
	conn := []string{"--api-url", apiURL, "--state-dir", dir}
	admin := adminToken(t, url, conn)
	run := func(args ...string) (string, int) {
		code, out, errOut := clitest.Run(append(args, conn...)...)
		return out + errOut, code
	}
	created := clitest.MustRun(t, append([]string{"token", "create", "--name", "op", "--role", "operator", "--token", admin}, conn...)...)
	conn = append(conn, "--token", strings.TrimSpace(created))
	testenv.Eventually(t, 30*time.Second, "the scheduler answers", func() bool { _, code := run("list"); return code == 0 })
	out, code := run("submit", "-f", specFile)
	require.Zero(t, code, out)
	id := regexp.MustCompile(`submitted experiment (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, id, out)
	// Submitted through the scheduler's API, it is known at once.
	out, code = run("status", id[1])
	require.Zero(t, code, "status right after submit: %s", out)

	out, code = run("cancel", "no-such-experiment-20261130-000000-0000")
	require.NotZero(t, code, out)
	require.Contains(t, out, "unknown experiment", "a cancel of an unknown id says so")

	testenv.Eventually(t, 30*time.Second, "a run provisioning", func() bool {
		out, code := run("status", id[1])
		return code == 0 && strings.Contains(out, "provisioning")
	})
	out, code = run("cancel", "--reason", "test over", id[1])
	require.Zero(t, code, out)
	// The experiment is marked cancelled first, its runs right after.
	testenv.Eventually(t, 30*time.Second, "the experiment and its runs cancelled", func() bool {
		out, code = run("status", id[1])
		return code == 0 && strings.Contains(out, ": cancelled,") && !strings.Contains(out, "provisioning") && !strings.Contains(out, "pending")
	})
	require.Contains(t, out, "cancelled, 0/2 runs done, 0 failed, 2 cancelled", out)
	require.Contains(t, out, "cancelled: test over", "the --reason is recorded with the runs")

	out, code = run("list")
	require.Zero(t, code, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	require.Equal(t, []string{"EXPERIMENT", "STATE", "RUNS", "DONE", "FAILED", "CANCELLED", "SUBMITTED"}, strings.Fields(lines[0]))
	require.Equal(t, []string{id[1], "cancelled", "2", "0", "0", "2"}, strings.Fields(lines[1])[:6])
}
