package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
)

// EnvHistoryRows names the variable sizing the benchmarks' shared history
// (HistoryStore): 30 M rows by default, 300 M in `make bench`.
const EnvHistoryRows = "GREENFLOW_BENCH_HISTORY_ROWS"

// historyDays is the span of the shared history before store.HistoryEndMs.
const historyDays = 365

var history struct {
	once sync.Once
	st   *store.Store
	rows uint64
	err  error
}

// HistoryStore opens the database of the benchmarks' shared history — a
// year of other runs in a shared database (store.GenerateSampleHistory),
// EnvHistoryRows samples ending at store.HistoryEndMs — building it when an
// earlier binary has not (with EnvClickHouseDir the server keeps it; 300 M
// rows take about 5 minutes to build on 2 cores). Benchmarks add their runs
// after HistoryEndMs. It returns the store, open for the binary, and the
// history's rows.
func HistoryStore(tb testing.TB) (*store.Store, uint64) {
	tb.Helper()
	history.once.Do(func() {
		rows := uint64(30_000_000)
		if v := os.Getenv(EnvHistoryRows); v != "" {
			if rows, history.err = strconv.ParseUint(v, 10, 64); history.err != nil {
				history.err = fmt.Errorf("%s=%q: expected a row count: %w", EnvHistoryRows, v, history.err)
				return
			}
		}
		history.st = NamedStore(tb, fmt.Sprintf("bench_history_%d", rows))
		began := time.Now()
		history.rows, history.err = history.st.GenerateSampleHistory(context.Background(), store.HistoryEndMs, historyDays, rows/historyDays,
			func(done int) {
				if done%73 == 0 {
					tb.Logf("history: %d of %d days (%s)", done, historyDays, time.Since(began).Round(time.Second))
				}
			})
		tb.Logf("history: %d rows ready in %s", history.rows, time.Since(began).Round(time.Second))
	})
	require.NoError(tb, history.err)
	return history.st, history.rows
}
