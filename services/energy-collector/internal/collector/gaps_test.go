package collector_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

// gapsOf reads the recorded gaps of node with reason.
func gapsOf(tb testing.TB, st *store.Store, node, reason string) []store.Gap {
	tb.Helper()
	all, err := st.GapsOverlapping(context.Background(), []string{node}, 0, 1<<62)
	require.NoError(tb, err)
	var out []store.Gap
	for _, g := range all {
		if g.Reason == reason {
			out = append(out, g)
		}
	}
	return out
}

// A RAPL counter jump of 262 kJ (far beyond the package's plausible power,
// twice its 150 W constraint) is not counted: no stored sample carries it,
// the collector counts it, and a gap row (reason implausible) covers the
// interval it was dropped from, naming the zone and the power it implied.
func TestImplausibleRAPLJumpIsFlaggedNotCounted(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	n := newMeteredNode(t, 4, 20, 60, 150_000_000)
	n.run(t)
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.Sources = []collector.SourceConfig{{ID: "rapl/metered", Kind: collector.KindRAPL, Node: "metered", PowercapRoot: n.powercap, ProcRoot: n.proc}}
	in := startCollector(t, url, cfg, st)
	publishAssign(t, in.b, "r1", []events.Target{{ID: "pod/metered/sut-0", Kind: "pod", Node: "metered", Role: "sut", Pod: "sut-0", Namespace: "gf"}})

	testenv.Eventually(t, 20*time.Second, "samples", func() bool { return countRows(t, st, "node = 'metered' AND scope = 'node'") >= 3 })
	n.jump(262_000e6)
	var gaps []store.Gap
	testenv.Eventually(t, 20*time.Second, "the jump recorded as a gap", func() bool {
		gaps = gapsOf(t, st, "metered", store.GapImplausible)
		return len(gaps) > 0
	})
	g := gaps[0]
	require.Equal(t, "rapl/metered", g.Source)
	require.Greater(t, g.ToMs, g.FromMs)
	require.Contains(t, g.Detail, "package-0")
	require.Contains(t, g.Detail, "above the plausible 300 W")
	v, ok := in.gauge(t, collector.MetricImplausible, "rapl/metered")
	require.True(t, ok)
	require.Equal(t, 1.0, v)

	var maxDelta float64
	require.NoError(t, st.Conn().QueryRow(context.Background(),
		"SELECT max(delta_j) FROM samples WHERE node = 'metered' AND scope = 'node'").Scan(&maxDelta))
	require.Less(t, maxDelta, 100.0, "no sample carries the 262 kJ")
}

// nodeSampleTimes are the times of node's node-scope samples.
func nodeSampleTimes(tb testing.TB, st *store.Store, node string) []int64 {
	tb.Helper()
	var out []int64
	for _, r := range readRows(tb, st) {
		if r.Node == node && r.Scope == "node" {
			out = append(out, r.TsMs)
		}
	}
	return out
}

// Samples dropped past the memory bound while ClickHouse is down leave a
// gap row (reason spool_full) once it is back: the node, the stretch of
// the dropped samples and how many readings — and no stored sample of the
// node falls inside it.
func TestDroppedSamplesLeaveAGapRow(t *testing.T) {
	st := &failingStore{Store: testenv.Store(t)}
	proc := t.TempDir()
	writeNodeFacts(t, proc, "Test CPU", 4<<20, 2, 1000, 10000)
	cfg := testConfig("c1", 50*time.Millisecond)
	cfg.ProcRoot = proc
	cfg.BatchSize, cfg.MaxBuffered = 10, 30 // no spool: a small memory backlog
	in := startCollector(t, testenv.NATS(t), cfg, st)

	testenv.Eventually(t, 20*time.Second, "samples flowing", func() bool { return len(nodeSampleTimes(t, st.Store, cfg.Node)) >= 3 })
	st.setDown(true)
	testenv.Eventually(t, 20*time.Second, "samples dropped", func() bool {
		n, _ := in.gaugeNoLabel(t, sink.MetricDropped)
		return n >= 30
	})
	st.setDown(false)

	var gaps []store.Gap
	testenv.Eventually(t, 20*time.Second, "the drop recorded", func() bool {
		gaps = gapsOf(t, st.Store, cfg.Node, store.GapSpoolFull)
		return len(gaps) > 0
	})
	g := gaps[0]
	require.Equal(t, "model", g.Source, "the meter of the dropped samples")
	require.Equal(t, "c1", g.Collector)
	require.Positive(t, g.Samples)
	require.Greater(t, g.ToMs, g.FromMs)
	testenv.Eventually(t, 20*time.Second, "samples after the outage stored", func() bool {
		ts := nodeSampleTimes(t, st.Store, cfg.Node)
		return len(ts) > 0 && ts[len(ts)-1] > g.ToMs
	})
	// Inside a gap only readings that lost rows: none is stored whole (node,
	// zone and unattributed rows).
	for _, g := range gapsOf(t, st.Store, cfg.Node, store.GapSpoolFull) {
		for _, ts := range nodeSampleTimes(t, st.Store, cfg.Node) {
			if ts > g.FromMs && ts <= g.ToMs {
				require.Less(t, countRows(t, st.Store, "node = ? AND ts_ms = ?", cfg.Node, ts), uint64(3),
					"reading at %d stored whole inside the gap %d–%d", ts, g.FromMs, g.ToMs)
			}
		}
	}
}

// downAndBack runs a collector on a spool until samples flow, stops it for
// down, starts it again and returns the first gap row of reason it records,
// the last sample before the stop and when it stopped.
func downAndBack(t *testing.T, checkpointAge, down time.Duration, reason string) (g store.Gap, last int64, stopped time.Time,
	st *store.Store, node string) {
	t.Helper()
	st = testenv.Store(t)
	url := testenv.NATS(t)
	proc := t.TempDir()
	writeNodeFacts(t, proc, "Test CPU", 4<<20, 2, 1000, 10000)
	cfg := testConfig("c1", 100*time.Millisecond)
	cfg.ProcRoot, cfg.SpoolDir, cfg.MaxCheckpointAge = proc, t.TempDir(), checkpointAge
	in := startCollector(t, url, cfg, st)
	testenv.Eventually(t, 20*time.Second, "samples flowing", func() bool { return len(nodeSampleTimes(t, st, cfg.Node)) >= 5 })
	in.stop(t)
	stopped = time.Now()
	ts := nodeSampleTimes(t, st, cfg.Node)
	testenv.Eventually(t, 10*time.Second, "down long enough", func() bool { return time.Since(stopped) > down })
	startCollector(t, url, cfg, st)
	testenv.Eventually(t, 20*time.Second, "the "+reason+" recorded", func() bool {
		gaps := gapsOf(t, st, cfg.Node, reason)
		if len(gaps) > 0 {
			g = gaps[0]
		}
		return len(gaps) > 0
	})
	return g, ts[len(ts)-1], stopped, st, cfg.Node
}

// TestFreshBaselineLeavesAGapRow: a collector whose checkpoint is older
// than MaxCheckpointAge starts from a fresh baseline, and the stretch
// since its last sample is a gap row; no sample is stored inside it.
func TestFreshBaselineLeavesAGapRow(t *testing.T) {
	const age = 500 * time.Millisecond
	g, last, stopped, st, node := downAndBack(t, age, 2*age, store.GapFreshBaseline)
	require.Equal(t, last, g.FromMs, "from the last stored sample")
	require.Greater(t, g.ToMs, stopped.UnixMilli(), "to the new baseline")
	require.Contains(t, g.Detail, "checkpoint")
	testenv.Eventually(t, 20*time.Second, "samples after the baseline", func() bool {
		ts := nodeSampleTimes(t, st, node)
		return ts[len(ts)-1] > g.ToMs
	})
	for _, ts := range nodeSampleTimes(t, st, node) {
		require.False(t, ts > g.FromMs && ts <= g.ToMs, "stored sample at %d inside the gap %d–%d", ts, g.FromMs, g.ToMs)
	}
}

// TestAnOutageLeavesAGapRow: a collector down for a few intervals resumes
// from its checkpoint (within MaxCheckpointAge): one sample spans the
// outage, energy kept, and an outage row says where, when and how long.
func TestAnOutageLeavesAGapRow(t *testing.T) {
	g, last, stopped, st, node := downAndBack(t, time.Minute, 1500*time.Millisecond, store.GapOutage)
	require.Equal(t, last, g.FromMs, "from the last sample before the outage")
	require.Greater(t, g.ToMs, stopped.UnixMilli()+1500)
	require.GreaterOrEqual(t, g.Samples, uint64(14), "about 15 intervals of 100 ms went unread")
	require.Contains(t, g.Detail, "the meter went unread")
	require.Empty(t, gapsOf(t, st, node, store.GapFreshBaseline), "resumed from the checkpoint, not a new baseline")
}

// Records made while ClickHouse is down — here a run's meter configuration
// — wait in the spool directory: a collector stopped before ClickHouse came
// back writes them when it runs again.
func TestRecordsSurviveARestartInTheSpool(t *testing.T) {
	st := &failingStore{Store: testenv.Store(t)}
	st.setDown(true)
	url := testenv.NATS(t)
	proc := t.TempDir()
	writeNodeFacts(t, proc, "Test CPU", 4<<20, 2, 1000, 10000)
	cfg := testConfig("c1", 100*time.Millisecond)
	cfg.ProcRoot, cfg.SpoolDir = proc, t.TempDir()
	in := startCollector(t, url, cfg, st)
	publishAssignMeters(t, in.b, "r1", []events.Target{{ID: "pod/x/sut-0", Kind: "pod", Node: cfg.Node, Pod: "sut-0", Namespace: "gf"}},
		&events.CollectMeters{IntervalMs: 200, Source: "auto"})
	testenv.Eventually(t, 20*time.Second, "the configuration kept in the spool", func() bool {
		_, err := os.Stat(filepath.Join(cfg.SpoolDir, "records.json"))
		return err == nil
	})
	in.stop(t)
	stopped := time.Now().UnixMilli()
	st.setDown(false)

	startCollector(t, url, cfg, st)
	testenv.Eventually(t, 20*time.Second, "the configuration recorded before the restart is written", func() bool {
		ms, err := st.RunMeters(context.Background(), "e1")
		require.NoError(t, err)
		for _, m := range ms {
			if m.RunID == "r1" && m.TsMs < stopped && m.AskedIntervalMs == 200 {
				return true
			}
		}
		return false
	})
	testenv.Eventually(t, 20*time.Second, "the records file gone once written", func() bool {
		_, err := os.Stat(filepath.Join(cfg.SpoolDir, "records.json"))
		return os.IsNotExist(err)
	})
}
