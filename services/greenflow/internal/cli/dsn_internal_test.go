package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

// A watch that spans a restart of the dev stack reads its results from
// the ClickHouse the stack serves when the experiment ends: a restarted
// stack serves it on a new port, and `submit --watch` ended with
// "connection refused" on the port the stack had when it was submitted. A
// DSN given on the command line stays as given.
func TestTheDevStacksClickHouseIsLookedUpAgainWhenTheWatchEnds(t *testing.T) {
	dir := t.TempDir()
	serveOn := func(port int) { // what a dev stack (this process) writes at start
		reader := filepath.Join(dir, "clickhouse-reader.dsn")
		require.NoError(t, os.WriteFile(reader, fmt.Appendf(nil, "clickhouse://greenflow_reader:pw@127.0.0.1:%d/greenflow\n", port), 0o600))
		ep, err := json.Marshal(devstack.Endpoints{NATSURL: "nats://127.0.0.1:4222", ClickHouseDSN: fmt.Sprintf("clickhouse://greenflow@127.0.0.1:%d/greenflow", port),
			ClickHouseReaderDSNFile: reader, PID: os.Getpid()})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, devstack.EndpointsFile), ep, 0o644))
	}
	serveOn(36317)
	c := connFlags{stateDir: dir}
	require.NoError(t, c.resolve(true))
	require.Equal(t, "clickhouse://greenflow_reader:pw@127.0.0.1:36317/greenflow", c.currentDSN())
	serveOn(35667) // restarted during the watch
	require.Equal(t, "clickhouse://greenflow_reader:pw@127.0.0.1:35667/greenflow", c.currentDSN())

	given := connFlags{stateDir: dir, clickhouseDSN: "clickhouse://reader:pw@10.0.0.7:9000/greenflow"}
	require.NoError(t, given.resolve(true))
	serveOn(41000)
	require.Equal(t, "clickhouse://reader:pw@10.0.0.7:9000/greenflow", given.currentDSN())
}
