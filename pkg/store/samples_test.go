package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// t0 is an arbitrary epoch-ms origin for the fixtures.
const t0 = int64(1_760_000_000_000)

// sampleFixture stores, for nodes n1 and n2, one sample a second from t0+1 s
// to t0+4 s: each node's total at 10 W, a SUT process on n1 at 4 W, a
// foreign process on n1 at 1 W and n1's unattributed rest at 5 W; every
// row of n1 is written twice.
func sampleFixture(t *testing.T, s *store.Store) {
	t.Helper()
	var rows []store.Sample
	for k := int64(1); k <= 4; k++ {
		ts := t0 + k*1000
		for _, x := range []struct {
			node, scope, target string
			w                   float64
		}{{"n1", "node", "node/n1", 10}, {"n1", "process", "process/sut", 4}, {"n1", "process", "process/foreign", 1},
			{"n1", "unattributed", "node/n1", 5}, {"n2", "node", "node/n2", 10}} {
			rows = append(rows, store.Sample{TsMs: ts, Node: x.node, Scope: x.scope, TargetID: x.target, Source: "model", PowerW: x.w,
				EnergyJ: x.w * float64(k), DeltaJ: x.w, IntervalMs: 1000, Estimated: true, Collector: "c1"})
		}
	}
	for _, r := range rows {
		if r.Node == "n1" {
			rows = append(rows, r)
		}
	}
	require.NoError(t, s.InsertSamples(context.Background(), rows))
}

func TestSampleQueries(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	sampleFixture(t, s)

	t.Run("series in a window, duplicates once", func(t *testing.T) {
		got, err := s.SeriesInWindow(ctx, []string{"n1"}, t0+1500, t0+3500, 60_000)
		require.NoError(t, err)
		require.Len(t, got, 4) // node, two processes, unattributed
		byKey := map[string]store.SeriesWindow{}
		for _, x := range got {
			byKey[x.Scope+" "+x.TargetID] = x
		}
		n := byKey["node node/n1"]
		require.Equal(t, []string{"model"}, n.Sources)
		require.True(t, n.Estimated)
		require.False(t, n.PowerOnly)
		require.Equal(t, uint64(3), n.Samples, "samples at 2, 3 and 4 s overlap (1.5 s, 3.5 s]")
		require.InDelta(t, 20.0, n.CounterJ, 1e-9, "half of 2 s, all of 3 s, half of 4 s at 10 W")
		require.InDelta(t, 2000.0, n.CoveredMs, 1e-9)
		require.Zero(t, n.Gaps)
		require.Equal(t, int64(1000), n.MaxIntervalMs)
		require.InDelta(t, 10.0, n.PeakW, 1e-9)
		require.InDelta(t, 8.0, byKey["process process/sut"].CounterJ, 1e-9)
	})

	t.Run("role peaks", func(t *testing.T) {
		got, err := s.RolePeakPower(ctx, []string{"n1"}, t0+1500, t0+3500, map[string]string{"process/sut": results.RoleSUT})
		require.NoError(t, err)
		require.Equal(t, map[string]float64{results.RoleSUT: 4, results.RoleOther: 1, results.RoleUnattributed: 5}, got)
	})

	t.Run("nodes sampled from an instant", func(t *testing.T) {
		got, err := s.NodesSampledFrom(ctx, []string{"n1", "n2", "n3"}, t0+4000)
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n2"}, got)
		got, err = s.NodesSampledFrom(ctx, []string{"n1"}, t0+4001)
		require.NoError(t, err)
		require.Empty(t, got)
	})

	t.Run("targets sampled", func(t *testing.T) {
		got, err := s.TargetsSampled(ctx, []string{"n1"}, []string{"process/sut", "process/never"}, t0, t0+10_000)
		require.NoError(t, err)
		require.Equal(t, []string{"process/sut"}, got)
	})

	t.Run("each sample once", func(t *testing.T) {
		var got []store.Sample
		require.NoError(t, s.EachSample(ctx, []string{"n1"}, t0+1000, t0+2000, func(x store.Sample) error {
			got = append(got, x)
			return nil
		}))
		require.Len(t, got, 4, "the four series of n1 at 2 s, each once")
		require.Equal(t, store.Sample{TsMs: t0 + 2000, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "model", PowerW: 10, DeltaJ: 10,
			IntervalMs: 1000, Estimated: true}, got[0])
		all := 0
		require.NoError(t, s.EachSample(ctx, nil, t0, t0+10_000, func(store.Sample) error { all++; return nil }))
		require.Equal(t, 4*5, all, "every node when none is named")
	})

	t.Run("power over time", func(t *testing.T) {
		got, err := s.PowerOverTime(ctx, nil, t0, t0+4000, 2000, map[string]string{"process/sut": results.RoleSUT})
		require.NoError(t, err)
		want := []store.PowerBucket{}
		for _, c := range []struct {
			comp string
			w    float64
		}{{"node n1", 10}, {"node n2", 10}, {results.RoleOther, 1}, {results.RoleSUT, 4}, {results.RoleUnattributed, 5}} {
			for b := int64(0); b <= 2; b++ {
				want = append(want, store.PowerBucket{Bucket: b, Component: c.comp, W: c.w})
			}
		}
		// Buckets of 2 s from t0: samples at 1 s (bucket 0), 2 and 3 s (1), 4 s (2).
		require.Equal(t, want, got)
		noRoles, err := s.PowerOverTime(ctx, []string{"n1"}, t0, t0+4000, 4000, nil)
		require.NoError(t, err)
		require.Equal(t, []store.PowerBucket{{0, "node n1", 10}, {1, "node n1", 10}, {0, results.RoleOther, 5}, {1, results.RoleOther, 5},
			{0, results.RoleUnattributed, 5}, {1, results.RoleUnattributed, 5}}, noRoles, "without targets every process is other")
	})
	t.Run("recent power with its estimated flag", func(t *testing.T) {
		got, err := s.RecentPower(ctx, []string{"n1"}, t0, t0+4000, map[string]string{"process/sut": results.RoleSUT})
		require.NoError(t, err)
		require.Equal(t, []store.ComponentPower{{"node n1", 10, true}, {results.RoleOther, 1, true}, {results.RoleSUT, 4, true},
			{results.RoleUnattributed, 5, true}}, got, "the fixture's samples are all the model's")
		require.NoError(t, s.InsertSamples(ctx, []store.Sample{{TsMs: t0 + 1000, Node: "n9", Scope: "node", TargetID: "node/n9", Source: "rapl",
			PowerW: 30, DeltaJ: 30, IntervalMs: 1000, Collector: "c9"}}))
		metered, err := s.RecentPower(ctx, []string{"n9"}, t0, t0+4000, nil)
		require.NoError(t, err)
		require.Equal(t, []store.ComponentPower{{"node n9", 30, false}}, metered, "a hardware counter's power is not estimated")
		none, err := s.RecentPower(ctx, nil, t0, t0+4000, nil)
		require.NoError(t, err)
		require.Empty(t, none, "no node: nothing to read")
	})
	t.Run("watermarks per series and source", func(t *testing.T) {
		require.NoError(t, s.InsertSamples(ctx, []store.Sample{{TsMs: t0 + 2500, Node: "n2", Scope: "node", TargetID: "node/n2", Source: "rapl",
			DeltaJ: 1, IntervalMs: 500, Collector: "c2"}}))
		got, err := s.SampleWatermarks(ctx, []string{"n1", "n2", "n3"}, []string{"process/sut"}, t0+2000)
		require.NoError(t, err)
		require.Equal(t, []store.SeriesWatermark{{Node: "n1", Scope: "node", TargetID: "node/n1", Source: "model", FirstMs: t0 + 2000, LatestMs: t0 + 4000},
			{Node: "n1", Scope: "process", TargetID: "process/sut", Source: "model", FirstMs: t0 + 2000, LatestMs: t0 + 4000},
			{Node: "n2", Scope: "node", TargetID: "node/n2", Source: "model", FirstMs: t0 + 2000, LatestMs: t0 + 4000},
			{Node: "n2", Scope: "node", TargetID: "node/n2", Source: "rapl", FirstMs: t0 + 2500, LatestMs: t0 + 2500}}, got,
			"node totals and the named targets (not the foreign process nor the unattributed rest), each source on its own")
		got, err = s.SampleWatermarks(ctx, []string{"n1"}, nil, t0+4001)
		require.NoError(t, err)
		require.Empty(t, got)
	})
}

func TestSamplesKeepMillisecondTimestamps(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	base := int64(1_760_000_000_123)
	var in []store.Sample
	for i := 0; i < 5; i++ {
		in = append(in, store.Sample{TsMs: base + int64(i)*7, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "model",
			PowerW: 10, EnergyJ: float64(i) * 0.07, DeltaJ: 0.07, IntervalMs: 7, Estimated: true, Collector: "c1"})
	}
	require.NoError(t, s.InsertSamples(ctx, in))
	rows, err := s.Conn().Query(ctx, "SELECT ts_ms, toUnixTimestamp(ts), estimated FROM samples ORDER BY ts_ms")
	require.NoError(t, err)
	defer rows.Close()
	i := 0
	for rows.Next() {
		var ts int64
		var sec uint32
		var est uint8
		require.NoError(t, rows.Scan(&ts, &sec, &est))
		require.Equal(t, base+int64(i)*7, ts)
		require.Equal(t, uint32(ts/1000), sec)
		require.Equal(t, uint8(1), est)
		i++
	}
	require.Equal(t, 5, i)
}

// TestSampleQueriesReadTheirRunNotTheHistory: the queries that select a
// run's samples use the table's primary key (nodes) and partitions (days),
// so what they read follows the run, not the table's history. ClickHouse
// itself refuses each query here that would read without the key
// (force_primary_key), without the partition index (force_index_by_date)
// or more than maxRead rows; has(?, node), as the queries were written
// before, fails all three. The answers are those of the database without
// the history.
func TestSampleQueriesReadTheirRunNotTheHistory(t *testing.T) {
	s, ctx := testenv.ParallelStore(t)
	sampleFixture(t, s)
	nodes, roles := []string{"n1", "n2"}, map[string]string{"process/sut": results.RoleSUT}
	type answers struct {
		Series   []store.SeriesWindow
		BySource []store.SeriesWindow
		Peaks    map[string]float64
		Nodes    []string
		Targets  []string
		Samples  []store.Sample
		Power    []store.PowerBucket
		Marks    []store.SeriesWatermark
	}
	read := func(ctx context.Context) answers {
		var a answers
		var err error
		a.Series, err = s.SeriesInWindow(ctx, nodes, t0+1500, t0+3500, 60_000)
		require.NoError(t, err, "series in window")
		a.BySource, err = s.SeriesBySourceInWindow(ctx, nodes, t0+1500, t0+3500, 60_000)
		require.NoError(t, err, "series by source in window")
		a.Peaks, err = s.RolePeakPower(ctx, nodes, t0+1500, t0+3500, roles)
		require.NoError(t, err, "role peak power")
		a.Nodes, err = s.NodesSampledFrom(ctx, nodes, t0+1000)
		require.NoError(t, err, "nodes sampled")
		a.Targets, err = s.TargetsSampled(ctx, nodes, []string{"process/sut"}, t0, t0+10_000)
		require.NoError(t, err, "targets sampled")
		require.NoError(t, s.EachSample(ctx, nodes, t0, t0+10_000, func(x store.Sample) error {
			a.Samples = append(a.Samples, x)
			return nil
		}), "each sample")
		a.Power, err = s.PowerOverTime(ctx, nodes, t0, t0+4000, 2000, roles)
		require.NoError(t, err, "power over time")
		a.Marks, err = s.SampleWatermarks(ctx, nodes, []string{"process/sut"}, t0+2000)
		require.NoError(t, err, "sample watermarks")
		return a
	}
	want := read(ctx)
	require.Len(t, want.Series, 5)
	require.Equal(t, want.Series, want.BySource, "one source per series in the fixture: the same series")
	require.Len(t, want.Samples, 20)

	// The history: 30 earlier days of the same nodes, and another testbed
	// of 60,000 samples on the same day (its nodes sort before n1).
	const day = 24 * 3600 * 1000
	for d := int64(1); d <= 30; d++ {
		require.NoError(t, s.ReplicateSamples(ctx, t0, t0+10_000, -d*day, ""))
	}
	var other []store.Sample
	for i := 0; i < 60_000; i++ {
		other = append(other, store.Sample{TsMs: t0 + int64(i%4000), Node: fmt.Sprintf("h%d", i%4), Scope: "process",
			TargetID: fmt.Sprintf("process/h-%d", i/15000), Source: "model", PowerW: 1, DeltaJ: 0.001, IntervalMs: 1, Collector: "c2"})
	}
	require.NoError(t, s.InsertSamples(ctx, other))

	// The run's ~50 rows, and the granules (8,192 rows) at the edges of the
	// other nodes' ranges in the parts the run's day shares with them.
	const maxRead = 3 * 8192
	strict := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"force_primary_key": 1, "force_index_by_date": 1, "max_rows_to_read": maxRead}))
	require.Equal(t, want, read(strict))
}
