package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// An armed template is listed by `greenflow trigger list` and disarmed by
// `greenflow trigger disarm` (there was no way to disarm one before).
func TestCLITriggerListAndDisarm(t *testing.T) {
	t.Setenv("GREENFLOW_TOKEN", "")
	o := devstacktest.Options(t)
	o.HTTPAddr = "127.0.0.1:0"
	st := devstacktest.New(t, o)
	devstacktest.Run(t, st)
	run := func(args ...string) (string, string, int) {
		code, out, errOut := clitest.Run(append(args, "--state-dir", o.StateDir)...)
		return out, errOut, code
	}
	testenv.Eventually(t, 60*time.Second, "the scheduler answers", func() bool { _, _, code := run("trigger", "list"); return code == 0 })

	tmpl := filepath.Join(t.TempDir(), "on-build.yaml")
	require.NoError(t, os.WriteFile(tmpl, []byte(`apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: on-build}
spec:
  workload: {sensors: 10, periodMs: 1000, format: avro}
  trigger: {subject: ci.builds.done}
`), 0o644))
	out, errOut, code := run("submit", "-f", tmpl)
	require.Zero(t, code, errOut)
	testenv.Eventually(t, 30*time.Second, "the template listed", func() bool {
		out, _, code = run("trigger", "list")
		return code == 0 && bytes.Contains([]byte(out), []byte("on-build"))
	})
	require.Contains(t, out, "subject ci.builds.done")

	out, errOut, code = run("trigger", "disarm", "on-build")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "disarmed trigger on-build")
	out, _, _ = run("trigger", "list")
	require.NotContains(t, out, "on-build")
	_, errOut, code = run("trigger", "disarm", "on-build")
	require.NotZero(t, code)
	require.Contains(t, errOut, `no armed trigger named "on-build" (HTTP 404)`)
}
