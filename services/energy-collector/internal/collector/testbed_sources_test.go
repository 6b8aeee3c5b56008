package collector_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/app"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// sourcesFlags parses the collector's flags as the testbed overlay passes
// them to the collector on node.
func sourcesFlags(t *testing.T, node, sourcesFile string) collector.Config {
	fs := flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	cfg := app.Service.Default()
	require.NoError(t, app.Service.RegisterFlags(fs, &cfg))
	require.NoError(t, fs.Parse([]string{"--node=" + node, "--instance=" + node, "--sources-file=" + sourcesFile, "--spool-dir="}))
	return cfg
}

// On a testbed the collector on a node of the system under test reads the
// file `greenflow testbed up` wrote for that node (the ConfigMap's key,
// mounted where --sources-file points) and measures the node with both
// meters: its local one, and its wattmeter at the wall from Kwollect —
// g5ktest's in-process stand-in for the Grid'5000 API, which CI cannot
// reach, seen from inside the testbed (no credentials).
func TestCollectorMeasuresItsNodeWithTheSourcesTestbedUpWrote(t *testing.T) {
	api := g5ktest.New("", "", clock.RealClock{}, map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.Power("taurus-7", func(time.Time) float64 { return 140 })
	r := testbed.Reservation{Name: "energy-a", ID: "lyon/4242", Spec: testbed.Spec{Site: "lyon", Cluster: "taurus"},
		Nodes: []testbed.Node{{Host: "taurus-6.lyon.grid5000.fr", Role: testbed.RoleControl},
			{Host: "taurus-7.lyon.grid5000.fr", Role: testbed.RoleSUT, Facts: testbed.HostFacts{Wattmeter: true}}}}
	files, err := testbed.CollectorSources(r, api.URL+"/stable")
	require.NoError(t, err)
	dir := t.TempDir() // the ConfigMap's mount
	for key, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, key), []byte(content), 0o644))
	}

	cfg := sourcesFlags(t, "taurus-7", filepath.Join(dir, "taurus-7.yaml"))
	require.False(t, cfg.SourcesAbsent)
	require.Len(t, cfg.Sources, 2)
	// The stand-in publishes at once: no need for the real Kwollect's
	// minute behind.
	cfg.Sources[1].Delay = 2 * time.Second
	cfg.Interval, cfg.FlushInterval, cfg.BatchSize = 200*time.Millisecond, 100*time.Millisecond, 2000
	st := testenv.Store(t)
	in := startCollector(t, testenv.NATS(t), cfg, st)
	testenv.Eventually(t, 30*time.Second, "wattmeter and local rows of taurus-7", func() bool {
		return countRows(t, st, "node = 'taurus-7' AND scope = 'node' AND source = 'wattmeter'") >= 5 &&
			countRows(t, st, "node = 'taurus-7' AND scope = 'node' AND source IN ('rapl', 'model')") >= 5
	})
	in.stop(t)
	var joules, seconds float64
	require.NoError(t, st.Conn().QueryRow(context.Background(),
		"SELECT sum(delta_j), sum(interval_ms) / 1000 FROM samples WHERE node = 'taurus-7' AND scope = 'zone' AND zone = 'wall' AND source = 'wattmeter'").
		Scan(&joules, &seconds))
	require.Positive(t, seconds)
	require.InDelta(t, 140, joules/seconds, 1e-6, "the node's power at the wall")
}

// Without its node's file — the overlay applied by hand, without the
// ConfigMap, or a node testbed up did not write one for — the collector
// measures with its local meter and says so.
func TestCollectorWithoutItsSourcesFileMeasuresWithItsLocalMeter(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "taurus-9.yaml")
	cfg := sourcesFlags(t, "taurus-9", missing)
	require.True(t, cfg.SourcesAbsent)
	require.Empty(t, cfg.Sources)
	cfg.Source = collector.KindModel // this machine's RAPL may be unreadable: the model always is

	core, logs := observer.New(zap.WarnLevel)
	b := testenv.Bus(t, testenv.NATS(t), "energy-collector")
	b.Expect(bus.ExpectedConsumers("energy-collector")...)
	c, err := collector.New(cfg, collector.Deps{Bus: b, Store: testenv.Store(t), Logger: zap.New(core)})
	require.NoError(t, err)
	require.Contains(t, c.Source(), "model")
	got := logs.FilterMessage("sources file absent: measuring this node with its local meter only").All()
	require.Len(t, got, 1)
	require.Equal(t, missing, got[0].ContextMap()["sources_file"])
}
