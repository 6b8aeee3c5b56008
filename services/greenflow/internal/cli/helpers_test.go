package cli_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// greenflow runs the command line with args, as the binary would, and
// returns its exit code and what it wrote to stdout and to stderr.
func greenflow(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cli.Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustRun runs the command line with args, requires it to succeed and
// returns its stdout.
func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errOut := greenflow(args...)
	require.Zero(t, code, errOut)
	return out
}
