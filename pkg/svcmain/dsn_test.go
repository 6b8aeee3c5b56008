package svcmain

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A DSN file (mode 0600, a Secret's file) overrides --clickhouse-dsn, so
// the password is on no command line; an empty one is an error naming it.
func TestClickHouseDSNFromFile(t *testing.T) {
	c := Common{ClickHouseDSN: "clickhouse://127.0.0.1:9000/greenflow"}
	dsn, err := c.DSN()
	require.NoError(t, err)
	require.Equal(t, c.ClickHouseDSN, dsn)

	c.ClickHouseDSNFile = filepath.Join(t.TempDir(), "dsn")
	require.NoError(t, os.WriteFile(c.ClickHouseDSNFile, []byte("clickhouse://w:secret@127.0.0.1:9000/greenflow\n"), 0o600))
	dsn, err = c.DSN()
	require.NoError(t, err)
	require.Equal(t, "clickhouse://w:secret@127.0.0.1:9000/greenflow", dsn)

	require.NoError(t, os.WriteFile(c.ClickHouseDSNFile, nil, 0o600))
	_, err = c.DSN()
	require.ErrorContains(t, err, "--clickhouse-dsn-file "+c.ClickHouseDSNFile+": empty")
}
