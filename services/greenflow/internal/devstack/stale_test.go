package devstack_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

// A dev stack killed with SIGKILL leaves endpoints.json behind; its ports
// may be anyone's by then. ReadEndpoints refuses it (ErrNotRunning), so the
// CLI never sends the admin token or a ClickHouse password there (a trial
// captured both by listening on a crashed stack's ports).
func TestEndpointsOfAStackThatIsGoneAreRefused(t *testing.T) {
	dir := t.TempDir()
	gone := exec.Command("true")
	require.NoError(t, gone.Run()) // its pid is free again
	write := func(pid int) {
		b, err := json.Marshal(devstack.Endpoints{PID: pid, HTTPAddr: "127.0.0.1:19465", NATSURL: "nats://127.0.0.1:4222"})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, devstack.EndpointsFile), b, 0o644))
	}
	write(gone.Process.Pid)
	_, err := devstack.ReadEndpoints(dir)
	require.ErrorIs(t, err, devstack.ErrNotRunning)

	write(os.Getpid()) // a live process: read as before
	ep, err := devstack.ReadEndpoints(dir)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:19465", ep.HTTPAddr)
}
