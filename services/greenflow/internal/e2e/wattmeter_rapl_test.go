package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/energy/energytest"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// The wattmeter–RAPL residual through the real pipeline: the collector
// reads this node with two meters at once — RAPL from a fake powercap tree
// (testdata/powercap-wattmeter: package-0 at 40 W and its dram at 10 W,
// advanced as the node spends them) and the node's wattmeter from
// Kwollect (g5ktest, the in-process stand-in for the Grid'5000 API, which
// CI cannot reach; 80 W at the wall) — and the analyzer compares them per
// run. Each run's node gets quality_wattmeter_rapl_residual_j = the
// wattmeter's energy minus RAPL's (the whole node at the wall against the
// packages and DRAM: 30 W more here) and _pct of the wattmeter's, while
// the run's node energy stays RAPL's.
func TestWattmeterRAPLResidualThroughCollectorAndAnalyzer(t *testing.T) {
	const raplW, packageW, wallW = 50.0, 40.0, 80.0
	host, err := os.Hostname()
	require.NoError(t, err)
	api := g5ktest.New("", "", clock.RealClock{}, map[string][]string{"taurus": {host + ".lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.Power(host, func(time.Time) float64 { return wallW })
	root := energytest.CopyTree(t, "testdata/powercap-wattmeter")
	pause := spendRAPL(t, root, packageW, raplW-packageW)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	o := devstacktest.Options(t)
	o.UC3Command = []string{filepath.Join(binaries(t), "uc3-processor")}
	o.Collector = func(c *collectorapp.Config) {
		c.Interval, c.FlushInterval = 200*time.Millisecond, 200*time.Millisecond
		c.Sources = []collectorapp.SourceConfig{
			{ID: "rapl/" + host, Kind: "rapl", PowercapRoot: root},
			{ID: "wattmeter/" + host, Kind: "kwollect", Node: host, Site: "lyon", URL: api.URL + "/stable", Delay: time.Second},
		}
	}
	st, b := devstacktest.Start(t, o)
	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "4s", "spec.meters.source=rapl"))
	require.Equal(t, 2, n)
	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 2*time.Minute, nil))

	rows, err := st.Store.Results(ctx, id)
	require.NoError(t, err)
	type runMetric struct{ run, metric string }
	run, node := map[runMetric]float64{}, map[runMetric]float64{} // the run's figures; this node's
	estimated := map[runMetric]bool{}
	zoneJ := map[runMetric]float64{} // each zone's energy: metric is the zone's subject
	runIDs := map[string]bool{}      // the n runs and any retry of one the machine starved
	for _, r := range rows {
		runIDs[r.RunID] = true
		switch {
		case r.Scope == results.ScopeZone && r.Metric == results.EnergyJ:
			zoneJ[runMetric{r.RunID, r.Subject}] = r.Value
		case r.Scope == results.ScopeRun:
			run[runMetric{r.RunID, r.Metric}] = r.Value
		case r.Scope == results.ScopeNode && r.Subject == host:
			node[runMetric{r.RunID, r.Metric}] = r.Value
			estimated[runMetric{r.RunID, r.Metric}] = r.Estimated
		}
	}
	// The fake counters are as stale as the writer's longest pause: a read
	// just after a write and one just before the next differ by that much
	// of the node's energy. On an idle machine the pause is a tick or two
	// (20–40 ms) and the figures' own 5 % bound holds; on a starved one the
	// bound is the fixture's, not the pipeline's.
	staleJ := raplW * pause().Seconds()
	runs := 0
	for k, residual := range node {
		if k.metric != results.QualityWattmeterRAPLResidualJ {
			continue
		}
		runs++
		pct := node[runMetric{k.run, results.QualityWattmeterRAPLResidualPct}]
		window := run[runMetric{k.run, results.DurationS}]
		raplJ := run[runMetric{k.run, results.NodeEnergyJ}]
		t.Logf("run %s: window %.3f s, RAPL %.2f J, residual %.2f J (%.2f %%); the fake counters' writer paused %.0f ms at most (%.2f J)",
			k.run, window, raplJ, residual, pct, 1000*staleJ/raplW, staleJ)
		require.Equal(t, 2.0, node[runMetric{k.run, results.QualityCrossMeters}], "RAPL and the wattmeter measured the node at once")
		tolJ := max(0.05*raplW*window, staleJ)
		require.InDelta(t, raplW*window, raplJ, tolJ, "the run's node energy is RAPL's (package + dram)")
		// Which counters it is, however stale: the two zones are written at
		// one instant, so their ratio is the fixture's 10 W to 40 W.
		pkgJ, dramJ := zoneJ[runMetric{k.run, host + "/package-0"}], zoneJ[runMetric{k.run, host + "/package-0/dram"}]
		require.InDelta(t, raplJ, pkgJ+dramJ, 1e-6*raplJ, "the node's energy is its package's and its DRAM's")
		require.InDelta(t, (raplW-packageW)/packageW, dramJ/pkgJ, 0.02*(raplW-packageW)/packageW, "DRAM against the package")
		// The wattmeter's 1 Hz averages integrate exactly for a constant
		// power: its energy is 80 W × the window; the residual is it minus
		// RAPL's energy as the run reports it.
		require.InDelta(t, wallW*window-raplJ, residual, 0.01*wallW*window, "wattmeter − RAPL")
		require.InDelta(t, 100*residual/(wallW*window), pct, 1.5, "in %% of the wattmeter's energy")
		require.InDelta(t, 100*(wallW-raplW)/wallW, pct, max(5, 1.5+100*tolJ/(wallW*window)))
		require.False(t, estimated[k], "two hardware meters: nothing estimated")
		// One node measured by both: the run's figures are the node's.
		require.InDelta(t, residual, run[k], 1e-9)
		require.InDelta(t, pct, run[runMetric{k.run, results.QualityWattmeterRAPLResidualPct}], 1e-9)
	}
	require.GreaterOrEqual(t, len(runIDs), n)
	require.Equal(t, len(runIDs), runs, "a residual for each run's node")
}

// spendRAPL advances the tree's counters as a node spending packageW in
// its package and dramW in its DRAM does, until the test ends: each write
// sets the energy since the start, so the counters are right whenever the
// collector reads them to within the pause since the last write — 20 ms
// when the writer runs on time, and as long as the machine starves it
// otherwise (280 ms seen beside three busy processes on 2 cores: 13.9 J
// too much in a 4 s window at 50 W). It returns the longest pause so far.
func spendRAPL(t *testing.T, root string, packageW, dramW float64) (pause func() time.Duration) {
	start := time.Now()
	var longest atomic.Int64 // ns
	write := func(path string, w float64) {
		tmp := path + ".tmp"
		if os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", int64(w*time.Since(start).Seconds()*1e6))), 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				write(filepath.Join(root, "intel-rapl:0", "energy_uj"), packageW)
				write(filepath.Join(root, "intel-rapl:0", "intel-rapl:0:0", "energy_uj"), dramW)
				now := time.Now()
				if d := now.Sub(last); int64(d) > longest.Load() {
					longest.Store(int64(d))
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() time.Duration { return time.Duration(longest.Load()) }
}
