package collector_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestThreeCollectorsShareThirtySources runs three collectors over thirty
// Kepler endpoints, kills one, and checks in ClickHouse that every interval
// of every node was written exactly once: no duplicate rows, each row's
// interval starting exactly where the previous one ended (also across the
// hand-over), no two consecutive rows further apart than two intervals,
// energy conserved, and running totals continued by the new owner.
func TestThreeCollectorsShareThirtySources(t *testing.T) {
	const n = 30
	const interval = 250 * time.Millisecond
	st := testenv.Store(t)
	ins := startFleet(t, testenv.NATS(t), st, newKeplerFarm(t), n, interval, nil, "c0", "c1", "c2")
	publishAssign(t, ins[0].b, "e1-r0000", podTargets(n))

	testenv.Eventually(t, 30*time.Second, "every node sampled with its pod attributed", func() bool {
		return countRows(t, st, "scope = 'pod'") > 0 && distinct(t, st, "node", "scope = 'pod'") == n
	})
	testenv.Eventually(t, 30*time.Second, "a few intervals of every node", func() bool {
		return minPerNode(t, st, "scope = 'node'", n) >= 4
	})
	owners := map[string]int{}
	for _, c := range []string{"c0", "c1", "c2"} {
		owners[c] = int(distinct(t, st, "node", "scope = 'node' AND collector = ?", c))
	}
	require.Greater(t, owners["c1"], 0, "c1 owns some nodes: %v", owners)
	killMs := time.Now().UnixMilli()
	ins[1].stop(t)
	t.Logf("owners before the kill: %v", owners)

	testenv.Eventually(t, 30*time.Second, "c1's nodes taken over", func() bool {
		return distinct(t, st, "node", "scope = 'node' AND collector != 'c1' AND ts_ms > ?", killMs) == n &&
			minPerNode(t, st, "scope = 'node' AND ts_ms > ?", n, killMs) >= 4
	})
	ins[0].stop(t)
	ins[2].stop(t)

	// A stopping instance commits what it holds and waits, up to LeaseTTL
	// (1.5 intervals), for those rows to be durable before it releases the
	// claim; the new owner's first interval spans that pause. Generous: the
	// machine is shared.
	c := checkSeries(t, st, n, interval, 4*interval+time.Second)
	require.GreaterOrEqual(t, c.takenOver, owners["c1"], "c1's nodes moved to another collector")
	t.Logf("rows %d, nodes taken over %d, largest step between rows %s (interval %s)", c.rows, c.takenOver, c.maxStep, interval)
}

// TestCrashedCollectorsSourcesMove: an instance that cannot hand over (its
// NATS connection is gone, as in a crash) loses its sources once its
// membership lease expires; the new owners continue from its last
// committed state, so the stored intervals still join up exactly.
func TestCrashedCollectorsSourcesMove(t *testing.T) {
	const n = 12
	const interval = 250 * time.Millisecond
	st := testenv.Store(t)
	ins := startFleet(t, testenv.NATS(t), st, newKeplerFarm(t), n, interval, nil, "c0", "c1", "c2")
	testenv.Eventually(t, 30*time.Second, "a few intervals of every node", func() bool {
		return minPerNode(t, st, "scope = 'node'", n) >= 3
	})
	owned := distinct(t, st, "node", "scope = 'node' AND collector = 'c1'")
	require.Positive(t, owned)
	crashMs := time.Now().UnixMilli()
	ins[1].b.Close() // no hand-over, no goodbye
	ins[1].stop(t)
	testenv.Eventually(t, 30*time.Second, "c1's nodes taken over", func() bool {
		return minPerNode(t, st, "scope = 'node' AND ts_ms > ?", n, crashMs) >= 4
	})
	ins[0].stop(t)
	ins[2].stop(t)
	// Death to take-over: LeaseTTL (1.5 intervals) plus up to a heartbeat
	// (half an interval). The dead owner's last committed interval may end
	// up to CommitInterval (2 intervals) plus an interval before its death,
	// more while a commit waits for the previous one's rows to be written;
	// the new owner's first row covers that stretch too. Generous: the
	// machine is shared.
	c := checkSeries(t, st, n, interval, 6*interval+time.Second)
	require.GreaterOrEqual(t, c.takenOver, int(owned))
	t.Logf("rows %d, nodes taken over %d, largest step between rows %s (interval %s)", c.rows, c.takenOver, c.maxStep, interval)
}

type seriesCheck struct {
	rows, takenOver int
	maxStep         time.Duration
}

// checkSeries reads every stored sample and checks: a row stored twice (a
// new owner writes again the rows its predecessor committed) is identical;
// per node, each row's interval starts exactly where the previous row's ended,
// consecutive rows are at most maxStep apart, the running total continues,
// and the mean power is the farm's; parts + unattributed = node total at
// every instant.
func checkSeries(t *testing.T, st *store.Store, n int, interval, maxStep time.Duration) seriesCheck {
	t.Helper()
	rows := readRows(t, st)
	type key struct {
		node, scope, target, zone string
		ts                        int64
	}
	seen := map[key]row{}
	type at struct {
		node string
		ts   int64
	}
	nodeJ, partsJ := map[at]float64{}, map[at]float64{}
	series := map[string][]row{}
	takenOver := map[string]bool{}
	for _, r := range rows {
		k := key{r.Node, r.Scope, r.Target, r.Zone, r.TsMs}
		if prev, dup := seen[k]; dup {
			require.Equal(t, prev, r, "a row stored twice is identical")
			continue
		}
		seen[k] = r
		switch r.Scope {
		case "node":
			nodeJ[at{r.Node, r.TsMs}] += r.DeltaJ
			series[r.Node] = append(series[r.Node], r)
		case "pod", "unattributed":
			partsJ[at{r.Node, r.TsMs}] += r.DeltaJ
		}
	}
	require.Len(t, series, n)
	var maxGap time.Duration
	for node, rs := range series {
		var watts float64
		var ms int64
		for i, r := range rs {
			if i > 0 {
				prev := rs[i-1]
				require.Equal(t, prev.TsMs, r.TsMs-int64(r.IntervalMs), "%s: interval at %d starts where the previous ended", node, r.TsMs)
				gap := time.Duration(r.TsMs-prev.TsMs) * time.Millisecond
				maxGap = max(maxGap, gap)
				require.LessOrEqual(t, gap, maxStep, "%s: rows at %d and %d", node, prev.TsMs, r.TsMs)
				require.InDelta(t, prev.EnergyJ+r.DeltaJ, r.EnergyJ, 1e-6, "%s: running total continues at %d", node, r.TsMs)
				if prev.Collector != r.Collector {
					takenOver[node] = true
				}
			}
			watts += r.DeltaJ
			ms += int64(r.IntervalMs)
		}
		var idx int
		_, _ = fmt.Sscanf(node, "node-%d", &idx)
		require.InEpsilon(t, 48+float64(idx), watts/(float64(ms)/1000), 0.1, "%s: mean power", node)
	}
	for k, total := range nodeJ {
		require.InDelta(t, total, partsJ[k], 1e-9*math.Max(1, total), "conservation at %s %d", k.node, k.ts)
	}
	return seriesCheck{rows: len(rows), takenOver: len(takenOver), maxStep: maxGap}
}

func distinct(tb testing.TB, st *store.Store, col, where string, args ...any) uint64 {
	tb.Helper()
	var v uint64
	require.NoError(tb, st.Conn().QueryRow(t0ctx(), fmt.Sprintf("SELECT uniqExact(%s) FROM samples WHERE %s", col, where), args...).Scan(&v))
	return v
}

// minPerNode is the fewest rows matching where that any node has (0 when a
// node has none).
func minPerNode(tb testing.TB, st *store.Store, where string, nodes int, args ...any) uint64 {
	tb.Helper()
	q, err := st.Conn().Query(t0ctx(), "SELECT node, count() FROM samples WHERE "+where+" GROUP BY node", args...)
	require.NoError(tb, err)
	defer q.Close()
	var counts []uint64
	for q.Next() {
		var node string
		var c uint64
		require.NoError(tb, q.Scan(&node, &c))
		counts = append(counts, c)
	}
	if len(counts) < nodes {
		return 0
	}
	return slices.Min(counts)
}
