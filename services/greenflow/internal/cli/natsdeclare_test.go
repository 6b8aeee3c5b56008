package cli

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// `greenflow nats declare --keep` — what a cluster's nats-topology
// Deployment runs — stays connected and declares every stream and bucket
// again when NATS comes back with an empty store; it stops cleanly when
// told to.
func TestNATSDeclareKeepsTheTopologyAcrossAnEmptyRestart(t *testing.T) {
	srv, s := testenv.NewRestartableNATSWithAuth(t)
	ctx := t.Context()
	var out, errOut bytes.Buffer
	declarer := testenv.Go(t, ctx, func(ctx context.Context) error {
		return runNATS(ctx, []string{"declare", "--keep", "--log-level", "error", "--nats-url", s.URL,
			"--nats-nkey-file", s.Creds(bus.UserAdmin).NKeyFile}, &out, &errOut)
	})
	js, err := jetstream.New(s.Conn(t, bus.UserAdmin))
	require.NoError(t, err)
	declared := func() bool {
		for _, name := range append(bus.Buckets(), "") {
			var err error
			if name == "" {
				_, err = js.Stream(ctx, bus.StreamLifecycle)
			} else {
				_, err = js.KeyValue(ctx, name)
			}
			if err != nil {
				return false
			}
		}
		return true
	}
	testenv.Eventually(t, 10*time.Second, "every stream and bucket declared", declared)

	srv.Stop()
	srv.StartEmpty()
	back := time.Now()
	testenv.Eventually(t, 30*time.Second, "every stream and bucket declared again", declared)
	t.Logf("declared again %s after NATS came back empty", time.Since(back).Round(time.Millisecond))

	require.NoError(t, declarer.Stop(10*time.Second, "nats declare --keep"))
	require.Contains(t, errOut.String(), "keeping them declared")
}
