package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// A Grid'5000 node's wattmeter, sampled beside its local meter: rows of
// source wattmeter, zone wall, a Delay behind the collector's clock, at the
// node's power. Kwollect is g5ktest's in-process stand-in for the
// Grid'5000 API, which CI cannot reach.
func TestKwollectWattmeterSource(t *testing.T) {
	api := g5ktest.New("", "", clock.RealClock{}, map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.Power("taurus-7", func(time.Time) float64 { return 150 })
	st := testenv.Store(t)
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.Sources = []collector.SourceConfig{{ID: "wattmeter/taurus-7", Kind: collector.KindKwollect, Node: "taurus-7", Site: "lyon",
		URL: api.URL + "/stable", Delay: 2 * time.Second}}
	require.NoError(t, cfg.Validate())
	began := time.Now()
	in := startCollector(t, testenv.NATS(t), cfg, st)
	testenv.Eventually(t, 30*time.Second, "wattmeter rows", func() bool {
		return countRows(t, st, "node = 'taurus-7' AND scope = 'node' AND source = 'wattmeter'") >= 5
	})
	in.stop(t)

	var joules, seconds float64
	var firstTs int64
	require.NoError(t, st.Conn().QueryRow(context.Background(),
		"SELECT sum(delta_j), sum(interval_ms) / 1000, min(ts_ms) FROM samples WHERE node = 'taurus-7' AND scope = 'zone' AND zone = 'wall' AND source = 'wattmeter'").
		Scan(&joules, &seconds, &firstTs))
	require.Positive(t, seconds)
	require.InDelta(t, 150, joules/seconds, 1e-6, "the node's power at the wall")
	require.Less(t, firstTs, began.Add(time.Second).UnixMilli(), "stamped a Delay behind the collector's clock")
}
