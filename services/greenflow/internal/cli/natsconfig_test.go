package cli_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// nats-config prints a nats-server authorization block with every user's
// public key and permissions — never a seed — and keeps the seeds it made,
// so running it again prints the same users.
func TestNATSConfig(t *testing.T) {
	dir := t.TempDir()
	conf := clitest.MustRun(t, "nats-config", "--creds-dir", dir)
	require.Contains(t, conf, "authorization {")
	for _, user := range bus.Users() {
		require.Contains(t, conf, "# "+user+"\n", user)
		seed, err := os.ReadFile(natsembed.SeedFile(dir, user))
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(seed), "SU"), user)
		require.NotContains(t, conf, strings.TrimSpace(string(seed)), "a seed is printed for %s", user)
	}
	require.Contains(t, conf, `"gf.evt.run.analyzed"`, "the analyzer publishes its event")
	require.Equal(t, 2, strings.Count(conf, "allow_responses"), "only the scheduler (and admin) answer requests")

	require.Equal(t, conf, clitest.MustRun(t, "nats-config", "--creds-dir", dir))

	code, _, errOut := clitest.Run("nats-config")
	require.NotZero(t, code)
	require.Contains(t, errOut, "--creds-dir")
}
