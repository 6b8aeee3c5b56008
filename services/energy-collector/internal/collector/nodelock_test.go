package collector_test

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// overlaps returns the node-total samples of node whose interval starts
// before the previous sample ended (by more than the millisecond
// truncation of a reading's time and interval): the same stretch measured
// twice. A row stored twice (same time: a carried row written again) is one
// sample, as the table's key and the analysis have it.
func overlaps(rows []row, node string) (n int, writers map[string]int) {
	var node_ []row
	writers = map[string]int{}
	for _, r := range rows {
		if r.Node == node && r.Scope == "node" {
			node_ = append(node_, r)
			writers[r.Collector]++
		}
	}
	sort.Slice(node_, func(i, j int) bool { return node_[i].TsMs < node_[j].TsMs })
	for i := 1; i < len(node_); i++ {
		if node_[i].TsMs == node_[i-1].TsMs {
			continue
		}
		if node_[i].TsMs-int64(node_[i].IntervalMs) < node_[i-1].TsMs-2 {
			n++
		}
	}
	return n, writers
}

// Two collectors on one machine (same node) must not both read its meter:
// the node's energy would be stored twice and summed by the analysis (a
// new user found every run's node energy doubled, 167 J for 84 J, and the
// runs done). One reads; the other stands by, and takes over when the
// first stops — without measuring any stretch twice.
func TestTwoCollectorsOnOneNodeReadItsMeterOnce(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	a := testConfig("ec-a", 100*time.Millisecond)
	b := testConfig("ec-b", 100*time.Millisecond)
	b.Node = a.Node
	ia := startCollector(t, url, a, st)
	testenv.Eventually(t, 20*time.Second, "the first collector reads the node", func() bool {
		return countRows(t, st, "scope = 'node' AND node = ?", a.Node) >= 3
	})
	ib := startCollector(t, url, b, st)
	testenv.Eventually(t, 20*time.Second, "the second collector stands by", func() bool {
		v, _ := ib.gaugeNoLabel(t, collector.MetricPinnedStandby)
		return v == 1
	})
	before := countRows(t, st, "scope = 'node' AND node = ?", a.Node)
	testenv.Eventually(t, 20*time.Second, "the node keeps being read", func() bool {
		return countRows(t, st, "scope = 'node' AND node = ?", a.Node) >= before+10
	})
	require.Zero(t, countRows(t, st, "scope = 'node' AND collector = 'ec-b'"), "the standby read the meter too")

	// The reader stops: the standby takes over at once (the lock is
	// released) and reads on.
	ia.stop(t)
	testenv.Eventually(t, 20*time.Second, "the standby took the node over", func() bool {
		return countRows(t, st, "scope = 'node' AND collector = 'ec-b'") >= 5
	})
	ib.stop(t)
	n, writers := overlaps(readRows(t, st), a.Node)
	require.Zero(t, n, "stretches of the node measured twice (samples by collector: %v)", writers)
	require.Len(t, writers, 2, "both collectors read the node in turn")
}

// A reader that dies holds the lock until it expires (LeaseTTL); then the
// standby takes over. The dead holder is played by a lock entry of a
// foreign instance written by hand.
func TestAStandbyTakesTheMeterOverWhenTheLockExpires(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	cfg := testConfig("ec-b", 100*time.Millisecond)
	cfg.LeaseTTL = 2 * time.Second
	probe := startCollector(t, url, testConfig("probe", time.Second), st) // opens the bucket
	kv, err := probe.b.KV(context.Background(), cfg.Bucket)
	require.NoError(t, err)
	expires := time.Now().Add(3 * time.Second).UnixMilli()
	v, _ := json.Marshal(map[string]any{"instance": "ec-dead", "token": "x", "expires_ms": expires})
	_, err = kv.Put(context.Background(), "pinned."+cfg.Node+".local", v)
	require.NoError(t, err)

	started := time.Now()
	ib := startCollector(t, url, cfg, st)
	testenv.Eventually(t, 20*time.Second, "the collector stands by while the dead holder's lock runs", func() bool {
		v, _ := ib.gaugeNoLabel(t, collector.MetricPinnedStandby)
		return v == 1
	})
	testenv.Eventually(t, 20*time.Second, "the collector reads the node once the lock expired", func() bool {
		return countRows(t, st, "scope = 'node' AND node = ?", cfg.Node) >= 3
	})
	var firstMs int64
	require.NoError(t, st.Conn().QueryRow(context.Background(), "SELECT min(ts_ms) FROM samples WHERE scope = 'node' AND node = ?", cfg.Node).Scan(&firstMs))
	require.GreaterOrEqual(t, firstMs, started.Add(2500*time.Millisecond).UnixMilli(), "no reading while another instance held the lock")

	// The stretch since the dead holder's last renewal is recorded as a gap.
	var gaps []store.Gap
	testenv.Eventually(t, 20*time.Second, "the take-over recorded as a gap", func() bool {
		gaps = gapsOf(t, st, cfg.Node, store.GapFreshBaseline)
		return len(gaps) > 0
	})
	require.Equal(t, expires-cfg.LeaseTTL.Milliseconds(), gaps[0].FromMs, "from the holder's last renewal")
	require.Less(t, gaps[0].ToMs, firstMs, "to the baseline before the first sample")
	require.Contains(t, gaps[0].Detail, "taken over")
}

// A reader that is paused (SIGSTOP: a stall, a starved machine) past its
// lease loses the meter to the standby; when it resumes it must not store
// the reading that spans its pause — the standby measured that stretch
// already, and the same energy would be stored twice (a new user saw a
// 6.1 s sample over the other collector's readings, and the run failed on
// the overlap).
func TestAPausedReaderDoesNotStoreItsPause(t *testing.T) {
	env := newChildEnv(t)
	cfg := func(instance string) collector.Config {
		c := testConfig(instance, 100*time.Millisecond)
		c.Node, c.SpoolDir = "host-shared", t.TempDir()
		return c
	}
	a := startChild(t, env.spec(cfg("ec-a")))
	testenv.Eventually(t, 20*time.Second, "the first collector reads the node", func() bool {
		return countRows(t, env.st, "scope = 'node' AND collector = 'ec-a'") >= 3
	})
	b := startChild(t, env.spec(cfg("ec-b")))
	testenv.Eventually(t, 20*time.Second, "the second collector stands by", func() bool { return logHas(t, b.Log, "standing by") })
	require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGSTOP))
	testenv.Eventually(t, 20*time.Second, "the standby takes the meter over", func() bool {
		return countRows(t, env.st, "scope = 'node' AND collector = 'ec-b'") >= 10
	})
	require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGCONT))
	testenv.Eventually(t, 20*time.Second, "the paused collector notices it lost the meter", func() bool {
		return logHas(t, a.Log, "standing by")
	})
	b.stop(t)
	a.stop(t)
	n, writers := overlaps(readRows(t, env.st), "host-shared")
	require.Zero(t, n, "stretches of the node measured twice (samples by collector: %v)", writers)
}

// logHas reports whether a child's log holds s.
func logHas(tb testing.TB, path, s string) bool {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	return strings.Contains(string(b), s)
}
