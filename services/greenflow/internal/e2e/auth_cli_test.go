package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// The CLI finds a running dev stack's API and admin token by itself (no
// --token, no GREENFLOW_TOKEN): submit, status, list, cancel and token
// management work with nothing but --state-dir. A viewer token made with
// `greenflow token create` may read but not submit, and once revoked
// reads nothing.
func TestCLIUsesTheDevStacksTokenByItself(t *testing.T) {
	t.Setenv("GREENFLOW_TOKEN", "")
	o := devstacktest.Options(t)
	o.HTTPAddr = "127.0.0.1:0"
	o.UC3Command = []string{filepath.Join(binaries(t), "uc3-processor")}
	st := devstacktest.New(t, o)
	devstacktest.Run(t, st)
	_, err := st.APIURL(t.Context())
	require.NoError(t, err)

	run := func(args ...string) (string, string, int) {
		code, out, errOut := clitest.Run(append(args, "--state-dir", o.StateDir)...)
		return out, errOut, code
	}
	testenv.Eventually(t, 60*time.Second, "the scheduler answers", func() bool { _, _, code := run("list"); return code == 0 })

	example := filepath.Join(repoRoot(), "examples", "uc3-local.yaml")
	out, errOut, code := run("submit", "-f", example, "--set", "spec.phases.measure=1h")
	require.Zero(t, code, errOut)
	id := regexp.MustCompile(`submitted experiment (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, id, out)
	out, errOut, code = run("status", id[1])
	require.Zero(t, code, errOut)
	require.Contains(t, out, id[1])

	viewer, errOut, code := run("token", "create", "--name", "watcher", "--role", "viewer")
	require.Zero(t, code, errOut)
	viewer = strings.TrimSpace(viewer)
	require.Contains(t, errOut, "shown only this once")
	out, errOut, code = run("token", "list")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "watcher")
	require.Contains(t, out, "dev-admin")
	require.NotContains(t, out, viewer[len(viewer)-64:], "the list shows no secret")

	t.Setenv("GREENFLOW_TOKEN", viewer)
	_, errOut, code = run("list")
	require.Zero(t, code, "GREENFLOW_TOKEN comes before the dev stack's file: %s", errOut)
	_, errOut, code = run("cancel", id[1])
	require.NotZero(t, code)
	require.Contains(t, errOut, "token watcher has role viewer; this needs operator (HTTP 403)")
	require.Contains(t, errOut, "$GREENFLOW_TOKEN", "the error says where the token came from")

	t.Setenv("GREENFLOW_TOKEN", "")
	out, errOut, code = run("token", "revoke", "watcher")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "revoked token watcher")
	_, errOut, code = run("list", "--token", viewer)
	require.NotZero(t, code)
	require.Contains(t, errOut, "token revoked (HTTP 401)")

	out, errOut, code = run("cancel", id[1], "--reason", "test over")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "cancel requested for "+id[1])
}
