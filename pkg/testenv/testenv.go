// Package testenv gives tests the real infrastructure they need: an embedded
// NATS JetStream server and a real ClickHouse. ClickHouse comes from
// GREENFLOW_TEST_CLICKHOUSE_DSN (set by `make test`, which starts one server
// for the whole run) or, when unset, from a clickhouse-server child process
// started once per test binary; packages that use it call Main from TestMain
// so the child is stopped. Each test gets a database of its own.
//
// It also holds what tests use to run and wait on what they start, so that
// none hand-rolls it: Go (a blocking call in a goroutine, stopped with a
// bounded wait), Receive (a value on a channel, with a deadline),
// Eventually (a condition), Gate (an Init held back), RunAsChild and Child
// (the test binary re-executed as a real process), RequireOutcome (a table
// case of a (T, error) func) and CounterValue (a metric as a dashboard
// reads it).
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/store"
)

// EnvClickHouseDSN names the variable holding an external ClickHouse server
// address (clickhouse://127.0.0.1:9000) for tests.
const EnvClickHouseDSN = "GREENFLOW_TEST_CLICKHOUSE_DSN"

// EnvClickHouseDir names the variable holding a directory where the
// ClickHouse child keeps its data between test binaries (created when
// missing, never removed): benchmarks whose data sets take minutes to build
// (`make bench` sets it to .cache/bench-clickhouse) find them there again,
// by name (NamedStore). The fresh databases of ClickHouseDSN are dropped
// when the binary ends (Run).
const EnvClickHouseDir = "GREENFLOW_TEST_CLICKHOUSE_DIR"

var (
	chOnce   sync.Once
	chServer *chserver.Server
	chBase   string
	chErr    error
	chDir    string
	chKeep   bool // chDir is EnvClickHouseDir's: kept, but not the fresh databases
	chMu     sync.Mutex
	chFresh  []string // the DSNs ClickHouseDSN gave out
)

// Main runs the tests and stops a ClickHouse child started for them.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with more to stop.
func Run(m *testing.M) int {
	code := m.Run()
	if chServer != nil {
		if chKeep {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			for _, dsn := range chFresh {
				_ = store.DropDatabase(ctx, dsn)
			}
			cancel()
		}
		_ = chServer.Stop()
		if !chKeep {
			_ = os.RemoveAll(chDir)
		}
	}
	return code
}

// ClickHouseBase returns the address of the test ClickHouse (no database).
func ClickHouseBase(tb testing.TB) string {
	tb.Helper()
	chOnce.Do(func() {
		if dsn := os.Getenv(EnvClickHouseDSN); dsn != "" {
			chBase = strings.TrimRight(dsn, "/")
			return
		}
		if chDir = os.Getenv(EnvClickHouseDir); chDir != "" {
			chKeep = true
		} else if chDir, chErr = os.MkdirTemp("", "greenflow-test-clickhouse-"); chErr != nil {
			return
		}
		chServer, chErr = chserver.Start(context.Background(), chDir)
		if chErr == nil {
			chBase = chServer.Base() // the writer: tests create databases and tables
		}
	})
	require.NoError(tb, chErr, "tests need a real ClickHouse: set %s or install clickhouse-server (make test does both)", EnvClickHouseDSN)
	return chBase
}

// ClickHouseDSN returns a DSN for a fresh database of this test's own.
func ClickHouseDSN(tb testing.TB) string {
	tb.Helper()
	dsn := ClickHouseBase(tb) + "/" + UniqueName("t")
	chMu.Lock()
	chFresh = append(chFresh, dsn)
	chMu.Unlock()
	return dsn
}

// Store opens a migrated store on a fresh database, closed at cleanup.
func Store(tb testing.TB) *store.Store {
	tb.Helper()
	return StoreOn(tb, ClickHouseDSN(tb))
}

// StoreOn opens a migrated store on dsn, closed at cleanup: for a test
// that also hands the database to something it starts (a child process, a
// CLI command), so it keeps the DSN from ClickHouseDSN.
func StoreOn(tb testing.TB, dsn string) *store.Store {
	tb.Helper()
	s := openStore(tb, dsn)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// NamedStore opens a migrated store on the database name, which is not
// emptied: with EnvClickHouseDir set it holds what an earlier test binary
// left there (a benchmark's data set); otherwise it is new with the server.
// It stays open for the test binary (a benchmark's set-up outlives the
// *testing.B it was made with).
func NamedStore(tb testing.TB, name string) *store.Store {
	tb.Helper()
	return openStore(tb, ClickHouseBase(tb)+"/"+name)
}

// openStore opens and migrates, allowing a minute (the first migration of
// a test binary creates every table).
func openStore(tb testing.TB, dsn string) *store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, dsn, Logger(tb))
	require.NoError(tb, err)
	return s
}

// UniqueName returns prefix_ plus random hex, valid as a database name.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// NATS starts an embedded JetStream server for this test and returns its URL.
func NATS(tb testing.TB) string {
	tb.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: tb.TempDir()})
	require.NoError(tb, err)
	tb.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

// NATSConn connects to url, closed at cleanup.
func NATSConn(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url)
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	return nc
}

// Logger is a test logger that prints only on failure (zaptest).
func Logger(tb testing.TB) *zap.Logger {
	return zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
}

// Eventually waits for cond with a deadline, polling; no fixed sleeps.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ParallelStore marks the test parallel — it has a database of its own — and
// returns a migrated store on a fresh database and a context that ends with
// the test: the opening of every test of one ClickHouse table.
func ParallelStore(t *testing.T) (*store.Store, context.Context) {
	t.Helper()
	t.Parallel()
	return Store(t), t.Context()
}
