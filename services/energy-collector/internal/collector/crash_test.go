package collector_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// TestKilledCollectorLosesNoInterval runs three collectors as separate
// processes over six Kepler exporters, and kills (SIGKILL) the one owning
// the most sources several times, each at a random instant of its commit
// cycle, restarting it after the take-over. Then, in ClickHouse: every
// series of every source is covered without a hole or an overlap across
// every kill (each sample's interval starts where the previous one ended),
// rows written twice are identical (so de-duplication by key keeps the
// right value), and parts + unattributed = node total at every instant.
func TestKilledCollectorLosesNoInterval(t *testing.T) {
	const nodes = 6
	const kills = 4
	const interval = 500 * time.Millisecond
	env := newChildEnv(t)
	st := env.st
	farm := newKeplerFarm(t)
	spec := func(name string) childSpec {
		cfg := testConfig(name, interval)
		cfg.FlushInterval = time.Second // the default: rows wait up to a second in memory
		cfg.Sources = farm.sources(nodes)
		return env.spec(cfg)
	}
	names := []string{"c0", "c1", "c2"}
	procs := map[string]*child{}
	for _, n := range names {
		procs[n] = startChild(t, spec(n))
	}
	b := testenv.Bus(t, env.nats, "test")
	publishAssign(t, b, "e1-r0000", podTargets(nodes))
	testenv.Eventually(t, 60*time.Second, "every node sampled with its pod attributed", func() bool {
		return minPerNode(t, st, "scope = 'pod'", nodes) >= 3
	})

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	type killRecord struct {
		victim   string
		atMs     int64
		offset   time.Duration
		sources  []string // nodes the victim owned
		takeover time.Duration
	}
	var record []killRecord
	for k := range kills {
		// The victim owns the most nodes now (by the latest rows).
		owners := latestOwners(t, st)
		count := map[string]int{}
		for _, o := range owners {
			count[o]++
		}
		victim := names[0]
		for _, n := range names {
			if count[n] > count[victim] {
				victim = n
			}
		}
		require.Positive(t, count[victim], "someone owns nodes: %v", owners)
		// A random instant within two commit cycles.
		offset := time.Duration(rng.Int64N(int64(4 * interval)))
		<-time.After(offset)
		var owned []string
		for node, o := range latestOwners(t, st) {
			if o == victim {
				owned = append(owned, node)
			}
		}
		killMs := time.Now().UnixMilli()
		procs[victim].Kill9(t) // no drain, no hand-over, no flush
		rec := killRecord{victim: victim, atMs: killMs, offset: offset, sources: owned}
		testenv.Eventually(t, 60*time.Second, fmt.Sprintf("kill %d: %s's nodes taken over", k, victim), func() bool {
			return countRows(t, st, "scope = 'node' AND collector != ? AND ts_ms > ?", victim, killMs) > 0 &&
				minPerNode(t, st, "scope = 'node' AND ts_ms > ?", nodes, killMs+int64(4*interval/time.Millisecond)) >= 1
		})
		for _, node := range owned {
			var first int64
			require.NoError(t, st.Conn().QueryRow(context.Background(),
				"SELECT min(ts_ms) FROM samples WHERE node = ? AND scope = 'node' AND collector != ? AND ts_ms > ?", node, victim, killMs).Scan(&first))
			if first > 0 {
				rec.takeover = max(rec.takeover, time.Duration(first-killMs)*time.Millisecond)
			}
		}
		record = append(record, rec)
		// Back with the same name: it rejoins and takes its share again.
		restartMs := time.Now().UnixMilli()
		procs[victim] = startChild(t, spec(victim))
		testenv.Eventually(t, 60*time.Second, "restarted "+victim+" samples again", func() bool {
			return countRows(t, st, "scope = 'node' AND collector = ? AND ts_ms > ?", victim, restartMs) > 0
		})
	}
	// Let every source run a few more intervals, then stop everything cleanly.
	endMs := time.Now().UnixMilli()
	testenv.Eventually(t, 60*time.Second, "a few more intervals", func() bool {
		return minPerNode(t, st, "scope = 'node' AND ts_ms > ?", nodes, endMs) >= 3
	})
	for _, n := range names {
		procs[n].stop(t)
	}

	cov := checkCoverage(t, st)
	killMs := make([]int64, len(record))
	for i, r := range record {
		killMs[i] = r.atMs
	}
	lost := cov.holesByKill(killMs)
	for i, r := range record {
		t.Logf("kill %d: %s at +%s of its cycle owned %v; take-over %s; nodes with a hole %d, %.0f ms, %.1f J missing",
			i, r.victim, r.offset.Round(time.Millisecond), r.sources, r.takeover.Round(time.Millisecond), lost[i].nodes, lost[i].ms, lost[i].j)
	}
	t.Logf("rows %d (of which written twice: %d), series %d; holes %d (%.0f ms, %.1f J of node energy), overlaps %d (%.0f ms)",
		cov.rows, cov.duplicates, cov.series, len(cov.holes), cov.holeMs(), cov.holeNodeJ(), len(cov.overlaps), cov.overlapMs())
	require.Empty(t, cov.holes, "no interval lost")
	require.Empty(t, cov.overlaps, "no interval counted twice")
}

// childEnv is what the test shares with collectors run as child
// processes: a NATS server and a fresh database, whose merges are stopped
// so that rows written twice stay visible.
type childEnv struct {
	nats, dsn string
	st        *store.Store
}

func newChildEnv(t *testing.T) childEnv {
	t.Helper()
	env := childEnv{nats: testenv.NATS(t), dsn: testenv.ClickHouseDSN(t)}
	env.st = testenv.StoreOn(t, env.dsn)
	stopMerges(t, env.st)
	return env
}

// spec is a child collector running cfg in this environment.
func (e childEnv) spec(cfg collector.Config) childSpec {
	return childSpec{NATS: e.nats, DSN: e.dsn, Config: cfg}
}

// stopMerges keeps rows written twice apart, so the test sees them and
// checks they are identical (a merge would hide a difference).
func stopMerges(tb testing.TB, st *store.Store) {
	tb.Helper()
	require.NoError(tb, st.Conn().Exec(context.Background(), "SYSTEM STOP MERGES samples"))
}

// latestOwners maps each node to the collector of its latest stored row.
func latestOwners(tb testing.TB, st *store.Store) map[string]string {
	tb.Helper()
	q, err := st.Conn().Query(context.Background(), "SELECT node, argMax(collector, ts_ms) FROM samples WHERE scope = 'node' GROUP BY node")
	require.NoError(tb, err)
	defer q.Close()
	out := map[string]string{}
	for q.Next() {
		var node, c string
		require.NoError(tb, q.Scan(&node, &c))
		out[node] = c
	}
	require.NoError(tb, q.Err())
	return out
}

// seriesKey identifies a series: at most one sample per ts_ms.
type seriesKey struct{ node, scope, target, zone, source string }

type fullRow struct {
	seriesKey
	TsMs       int64
	IntervalMs uint32
	DeltaJ     float64
	EnergyJ    float64
	PowerW     float64
	Collector  string
}

// gap is a hole or an overlap between two consecutive samples of a series.
type gap struct {
	key      seriesKey
	fromMs   int64 // where the earlier sample ended
	toMs     int64 // where the later sample's interval started
	powerW   float64
	byBefore string
	byAfter  string
}

type coverage struct {
	rows, duplicates, series int
	holes, overlaps          []gap
}

func (c coverage) holeMs() (ms float64) {
	for _, g := range c.holes {
		ms += float64(g.toMs - g.fromMs)
	}
	return ms
}

func (c coverage) overlapMs() (ms float64) {
	for _, g := range c.overlaps {
		ms += float64(g.fromMs - g.toMs)
	}
	return ms
}

// holeNodeJ is the node energy the holes miss, at the power of the sample
// after each hole.
func (c coverage) holeNodeJ() (j float64) {
	for _, g := range c.holes {
		if g.key.scope == "node" {
			j += g.powerW * float64(g.toMs-g.fromMs) / 1000
		}
	}
	return j
}

type holeCount struct {
	nodes int     // node series with a hole
	ms    float64 // their total length
	j     float64 // node energy missing
}

// holesByKill attributes each node-scope hole to the kill nearest to where
// it begins (the rows a kill loses end just before it).
func (c coverage) holesByKill(killMs []int64) []holeCount {
	out := make([]holeCount, len(killMs))
	for _, g := range c.holes {
		if g.key.scope != "node" || len(killMs) == 0 {
			continue
		}
		best := 0
		for i, k := range killMs {
			if abs64(g.fromMs-k) < abs64(g.fromMs-killMs[best]) {
				best = i
			}
		}
		out[best].nodes++
		out[best].ms += float64(g.toMs - g.fromMs)
		out[best].j += g.powerW * float64(g.toMs-g.fromMs) / 1000
	}
	return out
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// checkCoverage reads every stored sample, requires rows stored twice (same
// series and ts_ms) to be identical, and finds, per series, every hole and
// overlap between consecutive samples; it requires parts + unattributed =
// node total at every instant.
func checkCoverage(t *testing.T, st *store.Store) coverage {
	t.Helper()
	q, err := st.Conn().Query(context.Background(), `SELECT node, scope, target_id, zone, source, ts_ms, interval_ms, delta_j, energy_j, power_w, collector
		FROM samples ORDER BY node, scope, target_id, zone, source, ts_ms`)
	require.NoError(t, err)
	defer q.Close()
	var rows []fullRow
	for q.Next() {
		var r fullRow
		require.NoError(t, q.Scan(&r.node, &r.scope, &r.target, &r.zone, &r.source, &r.TsMs, &r.IntervalMs, &r.DeltaJ, &r.EnergyJ, &r.PowerW, &r.Collector))
		rows = append(rows, r)
	}
	require.NoError(t, q.Err())
	var c coverage
	c.rows = len(rows)
	series := map[seriesKey][]fullRow{}
	for _, r := range rows {
		s := series[r.seriesKey]
		if n := len(s); n > 0 && s[n-1].TsMs == r.TsMs {
			require.Equal(t, s[n-1], r, "a row stored twice is identical")
			c.duplicates++
			continue
		}
		series[r.seriesKey] = append(s, r)
	}
	c.series = len(series)
	type at struct {
		node string
		ts   int64
	}
	nodeJ, partsJ := map[at]float64{}, map[at]float64{}
	byName := func(a, b seriesKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
	for _, k := range slices.SortedFunc(maps.Keys(series), byName) {
		rs := series[k]
		for i, r := range rs {
			switch r.scope {
			case "node":
				nodeJ[at{r.node, r.TsMs}] += r.DeltaJ
			case "pod", "process", "unattributed":
				partsJ[at{r.node, r.TsMs}] += r.DeltaJ
			}
			if i == 0 {
				continue
			}
			prev, start := rs[i-1], r.TsMs-int64(r.IntervalMs)
			g := gap{key: k, fromMs: prev.TsMs, toMs: start, powerW: r.PowerW, byBefore: prev.Collector, byAfter: r.Collector}
			switch {
			case start > prev.TsMs:
				c.holes = append(c.holes, g)
			case start < prev.TsMs:
				c.overlaps = append(c.overlaps, g)
			}
		}
	}
	for _, g := range slices.Concat(c.holes, c.overlaps) {
		t.Logf("%s %s/%s/%s: earlier sample (by %s) ends at %d, next (by %s) starts at %d",
			map[bool]string{true: "hole", false: "overlap"}[g.toMs > g.fromMs], g.key.node, g.key.scope, g.key.target, g.byBefore, g.fromMs, g.byAfter, g.toMs)
	}
	for k, total := range nodeJ {
		require.InDelta(t, total, partsJ[k], 1e-9*math.Max(1, total), "conservation at %s %d", k.node, k.ts)
	}
	return c
}

// fakeRAPL is a powercap tree whose counters a goroutine advances at a
// constant power (package 40 W, its dram zone 8 W), wrapping like the real
// ones, with a fake /proc beside it whose process 100 keeps using CPU.
type fakeRAPL struct {
	powercap, proc string
	start          time.Time
	stop           chan struct{}
	done           chan struct{}
}

const (
	raplPackageW = 40.0
	raplDramW    = 8.0
	raplRangeUJ  = 262143328850
)

func newFakeRAPL(tb testing.TB) *fakeRAPL {
	tb.Helper()
	f := &fakeRAPL{powercap: tb.TempDir(), proc: tb.TempDir(), start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for _, z := range []struct{ dir, name string }{{"intel-rapl:0", "package-0"}, {"intel-rapl:0/intel-rapl:0:0", "dram"}} {
		dir := filepath.Join(f.powercap, z.dir)
		require.NoError(tb, os.MkdirAll(dir, 0o755))
		require.NoError(tb, os.WriteFile(filepath.Join(dir, "name"), []byte(z.name+"\n"), 0o644))
		require.NoError(tb, os.WriteFile(filepath.Join(dir, "max_energy_range_uj"), []byte(fmt.Sprintf("%d\n", raplRangeUJ)), 0o644))
	}
	f.advance(tb, true)
	go func() {
		defer close(f.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-f.stop:
				return
			case <-t.C:
				f.advance(tb, i%10 == 0)
			}
		}
	}()
	tb.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

// advance writes the counters for now, and the CPU times when proc (less
// often: they cost more to write, and the counters should lag little).
func (f *fakeRAPL) advance(tb testing.TB, proc bool) {
	s := time.Since(f.start).Seconds()
	for _, z := range []struct {
		dir string
		w   float64
	}{{"intel-rapl:0", raplPackageW}, {"intel-rapl:0/intel-rapl:0:0", raplDramW}} {
		uj := uint64(z.w*s*1e6) % raplRangeUJ
		if err := writeAtomic(filepath.Join(f.powercap, z.dir, "energy_uj"), fmt.Sprintf("%d\n", uj)); err != nil {
			tb.Errorf("advance rapl: %v", err)
		}
	}
	if !proc {
		return
	}
	ticks := int(s * 100)
	writeProc(tb, f.proc, 1000+ticks, 10000+4*ticks, map[int][2]int{1: {0, 10}, 100: {1, 50 + ticks/2}, 200: {1, 5}})
}

// TestKilledLocalCollectorResumesExactly kills (SIGKILL) the single
// collector measuring this machine's RAPL counters several times, each at a
// random instant, and restarts it: the restarted collector's first interval
// starts where the last stored one ended, so the node's series covers the
// whole time — outages included — without a hole or an overlap, and its
// energy is the counters' (48 W × the time covered).
func TestKilledLocalCollectorResumesExactly(t *testing.T) {
	const kills = 3
	const interval = 500 * time.Millisecond
	env := newChildEnv(t)
	st := env.st
	rapl := newFakeRAPL(t)
	cfg := testConfig("c0", interval)
	cfg.FlushInterval = time.Second
	cfg.Source, cfg.PowercapRoot, cfg.ProcRoot = "rapl", rapl.powercap, rapl.proc
	cfg.SpoolDir = t.TempDir()
	spec := env.spec(cfg)
	proc := startChild(t, spec)
	b := testenv.Bus(t, env.nats, "test")
	assignProcess(t, b, "e1-r0000", "process/e1-r0000/sut", cfg.Node)
	testenv.Eventually(t, 60*time.Second, "process target sampled", func() bool {
		return countRows(t, st, "scope = 'process'") >= 3
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	var killMs []int64
	for k := range kills {
		<-time.After(time.Duration(rng.Int64N(int64(4 * interval))))
		killMs = append(killMs, time.Now().UnixMilli())
		proc.Kill9(t)
		restartMs := time.Now().UnixMilli()
		proc = startChild(t, spec)
		testenv.Eventually(t, 60*time.Second, fmt.Sprintf("restart %d samples again", k), func() bool {
			return countRows(t, st, "scope = 'process' AND ts_ms > ?", restartMs) >= 3
		})
	}
	proc.stop(t)

	cov := checkCoverage(t, st)
	lost := cov.holesByKill(killMs)
	for i := range killMs {
		t.Logf("kill %d: %.0f ms, %.1f J missing", i, lost[i].ms, lost[i].j)
	}
	t.Logf("rows %d (of which written twice: %d), series %d; holes %d (%.0f ms), overlaps %d (%.0f ms)",
		cov.rows, cov.duplicates, cov.series, len(cov.holes), cov.holeMs(), len(cov.overlaps), cov.overlapMs())
	require.Empty(t, cov.holes, "no interval lost")
	require.Empty(t, cov.overlaps, "no interval counted twice")

	// The energy of the whole span is the counters': 48 W throughout, the
	// outages included (a restart that began from a fresh baseline would
	// miss 48 J per second of outage). The fake's counters are written every
	// 10 ms by a goroutine a loaded machine may delay, which shifts the two
	// ends of the span: the tolerance is one interval's energy; holes and
	// overlaps are ruled out exactly above.
	var first, last int64
	var joules float64
	require.NoError(t, st.Conn().QueryRow(context.Background(),
		"SELECT min(ts_ms - interval_ms), max(ts_ms), sum(delta_j) FROM (SELECT DISTINCT ts_ms, interval_ms, delta_j FROM samples WHERE scope = 'node')").
		Scan(&first, &last, &joules))
	span := float64(last-first) / 1000
	t.Logf("node energy %.2f J over %.3f s: %.3f W (counters: %.0f W)", joules, span, joules/span, raplPackageW+raplDramW)
	require.InDelta(t, (raplPackageW+raplDramW)*span, joules, (raplPackageW+raplDramW)*interval.Seconds())
}
