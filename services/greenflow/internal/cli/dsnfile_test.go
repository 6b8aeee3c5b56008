package cli_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	"github.com/stretchr/testify/require"
)

// --clickhouse-dsn-file keeps the DSN's password off the command line: the
// CLI reads the DSN there and answers as with --clickhouse-dsn; a file it
// cannot read or an empty one is an error naming the flag.
func TestCLIReadsTheClickHouseDSNFromAFile(t *testing.T) {
	t.Parallel()
	dsn := compareStore(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "clickhouse.dsn")
	require.NoError(t, os.WriteFile(file, []byte(dsn+"\n"), 0o600))
	run := func(args ...string) (string, string, int) {
		code, out, errOut := clitest.Run(append([]string{"compare", "--state-dir", t.TempDir()}, args...)...)
		return out, errOut, code
	}
	want, errOut, code := run("--clickhouse-dsn", dsn, expA, expB)
	require.Zero(t, code, errOut)
	out, errOut, code := run("--clickhouse-dsn-file", file, expA, expB)
	require.Zero(t, code, errOut)
	require.Equal(t, want, out)

	_, errOut, code = run("--clickhouse-dsn-file", filepath.Join(dir, "missing"), expA, expB)
	require.NotZero(t, code)
	require.Contains(t, errOut, "read --clickhouse-dsn-file")
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	_, errOut, code = run("--clickhouse-dsn-file", empty, expA, expB)
	require.NotZero(t, code)
	require.Contains(t, errOut, "--clickhouse-dsn-file "+empty+": empty, expected clickhouse://")
}
