package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// writeNodeFacts writes a fake node's cpuinfo, meminfo and stat (vcpus
// per-CPU lines, busy of total ticks).
func writeNodeFacts(tb testing.TB, root, cpuModel string, memKB, vcpus, busy, total int) {
	tb.Helper()
	require.NoError(tb, writeAtomic(filepath.Join(root, "stat"), statFor(vcpus, busy, total)))
	require.NoError(tb, writeAtomic(filepath.Join(root, "cpuinfo"), "processor\t: 0\nmodel name\t: "+cpuModel+"\n"))
	require.NoError(tb, writeAtomic(filepath.Join(root, "meminfo"), fmt.Sprintf("MemTotal:       %d kB\nMemFree: 1 kB\n", memKB)))
}

// nodeIntervals returns the intervals of node-scope samples after fromMs.
func nodeIntervals(tb testing.TB, st *store.Store, node string, fromMs int64) []int64 {
	tb.Helper()
	var out []int64
	for _, r := range readRows(tb, st) {
		if r.Node == node && r.Scope == "node" && r.TsMs > fromMs {
			out = append(out, int64(r.IntervalMs))
		}
	}
	return out
}

func median(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// A run whose spec asks 500 ms is sampled every 500 ms although the
// collector's own interval is 1 s; a second run on the node asking 200 ms
// makes the node sampled every 200 ms while both are active (the finest
// interval asked: the first run gets finer samples than it asked, and its
// recorded configuration says so); when the runs end the collector's own
// interval returns. Each run's effective configuration — interval asked and
// sampled, meter, model profile with the node's vCPUs — is in run_meters.
func TestRunMetersDriveTheSamplingInterval(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	proc := t.TempDir()
	writeNodeFacts(t, proc, "Test CPU @ 2.0GHz", 8<<20, 8, 1000, 10000)
	cfg := testConfig("c1", time.Second)
	cfg.ProcRoot = proc
	in := startCollector(t, url, cfg, st)
	target := events.Target{ID: "pod/" + cfg.Node + "/sut-0", Kind: "pod", Node: cfg.Node, Role: "sut", Pod: "sut-0", Namespace: "gf"}

	// The spec's meters section, as the scheduler sends it.
	sp := spec.Default()
	sp.Spec.Meters.Sample.Duration = 500 * time.Millisecond
	asked := sp.Spec.Meters.Collect()
	require.Equal(t, int64(500), asked.IntervalMs)
	require.Nil(t, asked.Model, "no model in the spec: the node's profile")

	testenv.Eventually(t, 20*time.Second, "collector samples at its own interval", func() bool {
		return len(nodeIntervals(t, st, cfg.Node, 0)) >= 2
	})
	require.InDelta(t, 1000, median(nodeIntervals(t, st, cfg.Node, 0)), 150)

	at := time.Now().UnixMilli() + 600 // past the reading that closes the 1 s interval
	publishAssignMeters(t, in.b, "r1", []events.Target{target}, asked)
	testenv.Eventually(t, 20*time.Second, "samples 500 ms apart", func() bool { return len(nodeIntervals(t, st, cfg.Node, at)) >= 8 })
	iv := nodeIntervals(t, st, cfg.Node, at)
	require.InDelta(t, 500, median(iv), 75, "intervals %v", iv)

	at = time.Now().UnixMilli() + 300
	publishAssignMeters(t, in.b, "r2", []events.Target{target}, &events.CollectMeters{IntervalMs: 200, Source: "model",
		Model: &events.CollectModel{IdleWattsPerVCPU: 1, MaxWattsPerVCPU: 4}})
	testenv.Eventually(t, 20*time.Second, "samples 200 ms apart", func() bool { return len(nodeIntervals(t, st, cfg.Node, at)) >= 10 })
	iv = nodeIntervals(t, st, cfg.Node, at)
	require.InDelta(t, 200, median(iv), 50, "intervals %v", iv)
	testenv.Eventually(t, 20*time.Second, "node power follows r2's model", func() bool {
		// 8 vCPUs × 1 W at 0 % utilisation, plus 8 GiB × 0.392 W/GiB.
		var p float64
		err := st.Conn().QueryRow(context.Background(), "SELECT power_w FROM samples WHERE scope = 'node' ORDER BY ts_ms DESC LIMIT 1").Scan(&p)
		return err == nil && p > 11.1 && p < 11.2
	})

	publishRelease(t, in.b, "r2")
	publishRelease(t, in.b, "r1")
	at = time.Now().UnixMilli() + 600
	testenv.Eventually(t, 20*time.Second, "back to the collector's interval", func() bool { return len(nodeIntervals(t, st, cfg.Node, at)) >= 3 })
	require.InDelta(t, 1000, median(nodeIntervals(t, st, cfg.Node, at)), 150)

	meters := storedRows(t, 20*time.Second, "configurations recorded", 3, func() ([]store.RunMeter, error) {
		return st.RunMeters(context.Background(), "e1")
	})
	byRun := map[string][]store.RunMeter{}
	for _, m := range meters {
		byRun[m.RunID] = append(byRun[m.RunID], m)
	}
	r1 := byRun["r1"]
	require.GreaterOrEqual(t, len(r1), 2, "r1 alone, then r1 beside r2: %+v", r1)
	require.Equal(t, int64(500), r1[0].AskedIntervalMs)
	require.Equal(t, int64(500), r1[0].IntervalMs)
	require.Equal(t, "model", r1[0].Meter)
	require.True(t, r1[0].Estimated)
	require.Equal(t, "estimated", r1[0].Label)
	var prof energy.ModelProfile
	require.NoError(t, json.Unmarshal([]byte(r1[0].Model), &prof))
	require.Equal(t, energy.ModelName, prof.Name)
	require.Equal(t, 8, prof.VCPUs, "vCPUs from the node's /proc/stat")
	require.Equal(t, "Test CPU @ 2.0GHz", prof.CPUModel)
	require.Equal(t, energy.DefaultIdleWattsPerVCPU, prof.IdleWattsPerVCPU)
	require.InDelta(t, 8*energy.DefaultMemoryWattsPerGiB, prof.PlatformWatts, 0.001)
	i := slices.IndexFunc(r1, func(m store.RunMeter) bool { return m.IntervalMs == 200 })
	require.GreaterOrEqual(t, i, 0, "r1 beside r2 sampled every 200 ms: %+v", r1)
	require.Contains(t, r1[i].Note, "finer than the 500ms asked")
	r2 := byRun["r2"]
	require.NotEmpty(t, r2)
	require.Equal(t, int64(200), r2[0].IntervalMs)
	require.NoError(t, json.Unmarshal([]byte(r2[0].Model), &prof))
	require.Equal(t, 1.0, prof.IdleWattsPerVCPU, "r2's model applies")
	require.Empty(t, r2[0].Note)
}

// A run asking `meters.source: rapl` on a node without readable RAPL (an
// auto source that fell back to the model) is measured by the model; its
// recorded configuration says so in its note (before: a new user saw an
// empty note), which is what the analyzer flags as meter_fallback.
func TestAskedRAPLFallbackIsNoted(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	proc := t.TempDir()
	writeNodeFacts(t, proc, "Other CPU", 8<<20, 4, 1000, 10000)
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.Sources = []collector.SourceConfig{{ID: "local/bare", Kind: collector.KindAuto, Node: "bare", PowercapRoot: t.TempDir(), ProcRoot: proc}}
	in := startCollector(t, url, cfg, st)
	target := events.Target{ID: "pod/bare/sut-0", Kind: "pod", Node: "bare", Role: "sut", Pod: "sut-0", Namespace: "gf"}
	publishAssignMeters(t, in.b, "r1", []events.Target{target}, &events.CollectMeters{IntervalMs: 200, Source: "rapl"})

	rows := storedRows(t, 30*time.Second, "r1's configuration recorded", 1, func() ([]store.RunMeter, error) {
		return st.RunMeters(context.Background(), "e1")
	})
	for _, r := range rows {
		require.Equal(t, "rapl", r.AskedSource)
		require.Equal(t, energy.SourceModel, r.Meter)
		require.True(t, r.Estimated)
		require.Contains(t, r.Note, "asked rapl, measured by model (source local/bare)", "%+v", r)
		require.Contains(t, r.Note, "no readable RAPL", "%+v", r)
	}
}
