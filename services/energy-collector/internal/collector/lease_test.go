package collector_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
)

// A reader paused past its lease with no other instance on the node takes
// its own lock again and continues from its last commit — without writing
// that commit's rows a second time when they were already stored (the
// chaos suite, on a starved machine, found 16 sample keys stored twice in
// a run no one had killed: "rows handed over written again" after the lapse).
func TestAReaderRetakingItsOwnLockWritesNothingTwice(t *testing.T) {
	env := newChildEnv(t)
	cfg := testConfig("ec-a", 100*time.Millisecond) // lease 150 ms
	cfg.SpoolDir = t.TempDir()
	a := startChild(t, env.spec(cfg))
	testenv.Eventually(t, 20*time.Second, "the collector reads the node", func() bool {
		return countRows(t, env.st, "scope = 'node' AND collector = 'ec-a'") >= 5
	})
	// Whether a resumed reader sees the lapse depends on which of its
	// goroutines runs first (a renewal that wins finds the lock still its
	// own): stall it until it does, a few times at most.
	lapsed := func() bool { return logHas(t, a.Log, "went unrenewed past its lease") }
	for i := 0; i < 8 && !lapsed(); i++ {
		require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGSTOP))
		<-time.After(time.Second) // the stall: well past the 150 ms lease
		require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGCONT))
		for until := time.Now().Add(2 * time.Second); !lapsed() && time.Now().Before(until); {
			<-time.After(20 * time.Millisecond)
		}
	}
	require.True(t, lapsed(), "the collector noticed its lease lapsed")
	resumed := time.Now().UnixMilli()
	testenv.Eventually(t, 20*time.Second, "and reads on", func() bool {
		return countRows(t, env.st, "scope = 'node' AND collector = 'ec-a' AND ts_ms > ?", resumed) >= 5
	})
	a.stop(t)
	var rows, keys uint64
	require.NoError(t, env.st.Conn().QueryRow(context.Background(),
		"SELECT count(), uniqExact(node, scope, target_id, zone, source, ts_ms) FROM samples").Scan(&rows, &keys))
	require.Positive(t, rows)
	require.Equal(t, keys, rows, "every sample stored once")
}
