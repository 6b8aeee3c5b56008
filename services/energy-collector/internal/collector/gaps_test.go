package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
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
