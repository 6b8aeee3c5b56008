package cli_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/testenv"
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
	require.Equal(t, 1, strings.Count(conf, "allow_responses"), "only admin answers requests (the scheduler's NATS API is gone)")
	require.NotContains(t, conf, "gf.api.", "nobody calls or serves the scheduler's old request API")
	require.NotContains(t, conf, "$JS.API.STREAM.UPDATE.KV_", "no service declares a bucket")

	require.Equal(t, conf, clitest.MustRun(t, "nats-config", "--creds-dir", dir))

	code, _, errOut := clitest.Run("nats-config")
	require.NotZero(t, code)
	require.Contains(t, errOut, "--creds-dir")
}

// `greenflow nats declare` declares, as admin, every stream and bucket the
// services only look up; with a service's seed it is refused by the server
// and says so.
func TestNATSDeclare(t *testing.T) {
	_, s := testenv.NewRestartableNATSWithAuth(t)
	ctx := t.Context()
	js, err := jetstream.New(s.Conn(t, bus.UserAdmin))
	require.NoError(t, err)
	_, err = js.KeyValue(ctx, bus.BucketScheduler)
	require.ErrorIs(t, err, jetstream.ErrBucketNotFound, "nothing declared yet")

	code, _, errOut := clitest.Run("nats", "declare", "--nats-url", s.URL, "--nats-nkey-file", s.Creds(string(events.ServiceScheduler)).NKeyFile)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "declare stream GF_LIFECYCLE")
	require.Contains(t, errOut, "refused by the nats server's permissions", "a service's seed is refused")

	out := clitest.MustRun(t, "nats", "declare", "--nats-url", s.URL, "--nats-nkey-file", s.Creds(bus.UserAdmin).NKeyFile)
	require.Contains(t, out, bus.StreamLifecycle)
	for _, name := range bus.Buckets() {
		require.Contains(t, out, name)
		kv, err := js.KeyValue(ctx, name)
		require.NoError(t, err, "bucket %s declared", name)
		status, err := kv.Status(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(bus.BucketConfig(name).History), status.History(), "bucket %s as configured", name)
	}
}
