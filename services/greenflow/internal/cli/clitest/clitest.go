// Package clitest runs the greenflow command line in tests as its binary
// would, capturing what it prints: the one helper the CLI's own tests and
// the end-to-end tests share.
package clitest

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// Run runs the command line with args and returns its exit code and what
// it wrote to stdout and to stderr.
func Run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cli.Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// MustRun runs the command line with args, requires it to succeed (the
// failure names the arguments and what it wrote to stderr) and returns its
// stdout. Call it from the test's goroutine.
func MustRun(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errOut := Run(args...)
	require.Zero(t, code, "greenflow %v: %s", args, errOut)
	return out
}
