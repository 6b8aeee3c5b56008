package local_test

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
)

// TestContract runs the suite every backend passes (see provtest.Contract)
// against processes of this machine: the run is a shell loop, its crash a
// SIGKILL as the OOM killer sends, a new instance another backend on the
// same node, records and state directory.
func TestContract(t *testing.T) {
	t.Parallel()
	st := records(t, "")
	dir := t.TempDir()
	provtest.Contract(t, provtest.Harness{
		Name:  "local",
		Store: st,
		New: func(tb testing.TB) provtest.Backend {
			return newBackend(tb, st, func(c *local.Config) { c.StateDir = dir })
		},
		Run: func(name string) events.RunProvision { return cmd(name, "echo up; exec sleep 60") },
		Crash: func(tb testing.TB, _ provtest.Backend, _ events.RunProvision, targets []events.Target) string {
			require.NoError(tb, syscall.Kill(targets[0].PID, syscall.SIGKILL))
			return "exit status 137 (killed by signal 9, killed); last output: up"
		},
		CrashReason: "exit status 137 (killed by signal 9, killed)",
		Gone: func(_ testing.TB, _ provtest.Backend, _ events.RunProvision, targets []events.Target) bool {
			return !provtest.Alive(targets[0].PID)
		},
		Parallel: true,
	})
}
