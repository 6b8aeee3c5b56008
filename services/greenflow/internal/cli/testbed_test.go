package cli_test

// The Grid'5000 API is g5ktest's in-process stand-in: the real testbed
// needs an account and holds machines, and CI cannot reach it.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// plan prints the reservation, its length and every command, from the
// example spec, and needs nothing running.
func TestTestbedPlan(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main([]string{"testbed", "plan", "-f", "../../../../examples/testbed-grid5000.yaml"}, &out, &errOut), errOut.String())
	plan := out.String()
	for _, want := range []string{
		"5 nodes of lyon/taurus for 3h0m0s; released 15m0s before the walltime (usable 2h45m0s)",
		"POST https://api.grid5000.fr/stable/sites/lyon/jobs",
		`"resources": "{cluster='taurus'}/nodes=5,walltime=3:00:00"`,
		`"name": "greenflow-taurus-energy"`,
		"through YOUR_G5K_LOGIN@access.grid5000.fr",
		"<control-1>  sudo-g5k modprobe intel_rapl_common",
		"<control-1>  curl -sfL https://get.k3s.io | sudo-g5k INSTALL_K3S_EXEC='server --node-label greenflow.dev/pool=platform",
		"<loadgen-1>  read -r K3S_TOKEN && export K3S_TOKEN && curl -sfL https://get.k3s.io | sudo-g5k K3S_URL=https://<control-1>:6443",
		"(stdin: <k3s token from the control node>)",
		"with its server rewritten to https://<control-1>:6443",
		"Release: DELETE https://api.grid5000.fr/stable/sites/lyon/jobs/<uid>",
	} {
		require.Contains(t, plan, want)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("testbed:\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1}\n  walltime: 1h\n"), 0o600))
	out.Reset()
	require.Equal(t, 1, cli.Main([]string{"testbed", "plan", "-f", bad}, &out, &errOut))
	require.Contains(t, errOut.String(), "testbed.nodes.sut: 0: expected at least 1")
}

// status lists what KV records and what the testbed says of it; down
// releases it (the stand-in sees the DELETE).
func TestTestbedStatusAndDown(t *testing.T) {
	api := g5ktest.New("alice", "s3cret", clock.RealClock{}, map[string][]string{"taurus": {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr",
		"taurus-3.lyon.grid5000.fr", "taurus-4.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	natsURL := testenv.NATS(t)
	kv, err := testenv.Bus(t, natsURL, "greenflow").KV(context.Background(), bus.BucketTestbed)
	require.NoError(t, err)
	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	m := testbed.NewManager(testbed.Config{Holder: "test"}, testbed.Deps{KV: kv, Backend: &testbed.Grid5000{C: c, User: "alice",
		Backoff: g5k.Backoff{First: time.Millisecond, Max: time.Millisecond}}})
	s, err := testbed.ParseSpec([]byte("testbed:\n  name: small\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1, sut: 1, broker: 1, loadgen: 1}\n  walltime: 1h\n"))
	require.NoError(t, err)
	r, err := m.Reserve(context.Background(), s, nil)
	require.NoError(t, err)

	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	flags := []string{"--state-dir", t.TempDir(), "--nats-url", natsURL, "--g5k-api", api.URL + "/stable", "--g5k-user", "alice", "--g5k-password-file", pw}
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.Regexp(t, `small\s+`+r.ID+`\s+running\s+running\s+4\s+`, out.String())

	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "down", "small"}, flags...), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "testbed small released")
	require.Len(t, api.Deletes(), 1)

	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.True(t, strings.Contains(out.String(), "released"), out.String())
}
