package energy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// Container, pod and process identities of the exporter fixtures.
const (
	fixtureC1  = "3f1c9a2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8" // pid 4242, pod sut-0
	fixtureC2  = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d" // pid 4300, pod sut-0
	fixturePod = "6f1e2d3c-4b5a-4978-8a1b-2c3d4e5f6a7b"
)

// exporter serves one exposition at a time over HTTP, as a real exporter
// would; tests switch the page between reads.
type exporter struct {
	*httptest.Server
	mu    sync.Mutex
	page  []byte
	block bool // hold requests until the client gives up
}

func newExporter(tb testing.TB) *exporter {
	tb.Helper()
	e := &exporter{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		page, block := e.page, e.block
		e.mu.Unlock()
		if block {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(page)
	}))
	tb.Cleanup(e.Close)
	return e
}

// serve makes the exporter answer with testdata/<file>.
func (e *exporter) serve(tb testing.TB, file string) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	require.NoError(tb, err)
	e.serveBytes(b)
}

func (e *exporter) serveBytes(b []byte) {
	e.mu.Lock()
	e.page, e.block = b, false
	e.mu.Unlock()
}

func (e *exporter) hang() {
	e.mu.Lock()
	e.block = true
	e.mu.Unlock()
}

func workloadValues(m energy.Measurement) map[string]float64 {
	out := map[string]float64{}
	for _, w := range m.Workloads {
		out[w.Key] += w.Value
	}
	return out
}

// step is one scrape of a fixture sequence and what it must yield.
type step struct {
	file      string
	baseline  bool // no trustworthy total: Interval 0
	totalJ    float64
	resets    int
	workloads map[string]float64
}

func runSequence(t *testing.T, e *exporter, src energy.Source, steps []step) {
	t.Helper()
	ctx := context.Background()
	for i, s := range steps {
		e.serve(t, s.file)
		m, err := src.Read(ctx, t0.Add(time.Duration(i)*time.Second))
		require.NoError(t, err, s.file)
		require.Equal(t, s.resets, m.Resets, "%s: resets", s.file)
		require.GreaterOrEqual(t, m.TotalDeltaJ, 0.0, s.file)
		require.LessOrEqual(t, m.TotalDeltaJ, energy.DefaultMaxPowerW*m.Interval.Seconds(), "%s: no spike", s.file)
		if s.baseline {
			require.Zero(t, m.Interval, "%s: baseline", s.file)
			require.Zero(t, m.TotalDeltaJ, s.file)
			require.Empty(t, m.Workloads, s.file)
			continue
		}
		require.Equal(t, time.Second, m.Interval, s.file)
		require.InDelta(t, s.totalJ, m.TotalDeltaJ, 1e-6, "%s: total", s.file)
		require.InDelta(t, s.totalJ, m.TotalPowerW, 1e-6, "%s: power over 1 s", s.file)
		got := workloadValues(m)
		for k, want := range s.workloads {
			require.InDelta(t, want, got[k], 1e-6, "%s: workload %s", s.file, k)
		}
		for _, w := range m.Workloads {
			require.GreaterOrEqual(t, w.Value, 0.0, "%s: workload %s", s.file, w.Key)
		}
	}
}

func TestKeplerSourceSequence(t *testing.T) {
	e := newExporter(t)
	src := energy.NewKeplerSource(energy.KeplerOptions{URL: e.URL + "/metrics", NodeName: "worker-1"})
	runSequence(t, e, src, []step{
		{file: "kepler/01-baseline.prom", baseline: true},
		// package +50, dram +10; core is inside the package.
		{file: "kepler/02-steady.prom", totalJ: 60, workloads: map[string]float64{"pid/4242": 22, "pid/4300": 5.5, "pid/999": 1}},
		// Exporter restarted: no counter continues, the watts gauges (48 + 9)
		// cover the interval, workloads start a new baseline.
		{file: "kepler/03-exporter-restart.prom", totalJ: 57, workloads: map[string]float64{"pid/4242": 0}},
		{file: "kepler/04-steady.prom", totalJ: 60, workloads: map[string]float64{"pid/4242": 22, "pid/4300": 5.5, "pid/999": 1.1}},
		// package and core counters went back, no gauge to fall back on.
		{file: "kepler/05-counter-reset.prom", baseline: true, resets: 2},
		{file: "kepler/06-steady.prom", totalJ: 60, workloads: map[string]float64{"pid/4242": 22}},
		// package jumped by 1 MJ in a second: a reset, not energy.
		{file: "kepler/07-spike.prom", baseline: true, resets: 1},
		{file: "kepler/08-steady.prom", totalJ: 60},
	})
}

func TestKeplerSourceZonesAndIdentity(t *testing.T) {
	e := newExporter(t)
	src := energy.NewKeplerSource(energy.KeplerOptions{URL: e.URL})
	e.serve(t, "kepler/01-baseline.prom")
	_, err := src.Read(context.Background(), t0)
	require.NoError(t, err)
	e.serve(t, "kepler/02-steady.prom")
	m, err := src.Read(context.Background(), t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, energy.SourceKepler, m.Source)
	require.Equal(t, energy.BasisJoules, m.Basis)
	zones := map[string]float64{}
	for _, z := range m.Zones {
		zones[z.Zone] = z.DeltaJ
	}
	require.InDeltaMapValues(t, map[string]float64{"core": 30, "dram": 10, "package": 50}, zones, 1e-9)
	byKey := map[string]energy.Workload{}
	for _, w := range m.Workloads {
		byKey[w.Key] = w.Workload
	}
	require.Equal(t, energy.Workload{Key: "pid/4242", PID: 4242, ContainerID: fixtureC1, PodUID: fixturePod, Pod: "sut-0", Namespace: "gf-r0000"}, byKey["pid/4242"])
	require.Equal(t, energy.Workload{Key: "pid/999", PID: 999}, byKey["pid/999"])
}

func TestScaphandreSourceSequence(t *testing.T) {
	e := newExporter(t)
	src := energy.NewScaphandreSource(energy.ScaphandreOptions{URL: e.URL + "/metrics"})
	procs := map[string]float64{"pid/4242": 20, "pid/4300": 5, "pid/999": 1}
	runSequence(t, e, src, []step{
		{file: "scaphandre/01-baseline.prom", baseline: true},
		{file: "scaphandre/02-steady.prom", totalJ: 50, workloads: procs},
		// The raw counter wrapped at an unknown range: the power gauge covers
		// the interval.
		{file: "scaphandre/03-wraparound.prom", totalJ: 52, resets: 1, workloads: map[string]float64{"pid/4242": 22}},
		{file: "scaphandre/04-steady.prom", totalJ: 51},
		// Host rebooted between scrapes: counter near zero.
		{file: "scaphandre/05-host-restart.prom", totalJ: 49, resets: 1, workloads: map[string]float64{"pid/4242": 19, "pid/4300": 4}},
		{file: "scaphandre/06-steady.prom", totalJ: 50},
		{file: "scaphandre/07-spike.prom", totalJ: 50, resets: 1},
		{file: "scaphandre/08-steady.prom", totalJ: 48, workloads: procs},
	})
}

func TestScaphandreSourcePowerOnly(t *testing.T) {
	e := newExporter(t)
	src := energy.NewScaphandreSource(energy.ScaphandreOptions{URL: e.URL})
	runSequence(t, e, src, []step{
		{file: "scaphandre/power-only.prom", baseline: true},
		{file: "scaphandre/power-only.prom", totalJ: 47, workloads: map[string]float64{"pid/4242": 20, "pid/999": 1}},
	})
}

// What only a Kepler source refuses (the contract suite covers malformed
// pages and timeouts): an exporter of another node, and a page without
// Kepler's node counters. Neither changes anything: the next good read
// covers the whole span since the last one.
func TestKeplerSourceRefusesOtherExporters(t *testing.T) {
	e := newExporter(t)
	src := energy.NewKeplerSource(energy.KeplerOptions{URL: e.URL, NodeName: "worker-1"})
	ctx := context.Background()
	e.serve(t, "kepler/01-baseline.prom")
	_, err := src.Read(ctx, t0)
	require.NoError(t, err)

	b, err := os.ReadFile("testdata/kepler/02-steady.prom")
	require.NoError(t, err)
	e.serveBytes([]byte(strings.ReplaceAll(string(b), `node_name="worker-1"`, `node_name="worker-2"`)))
	_, err = src.Read(ctx, t0.Add(time.Second))
	requireErrorMentions(t, err, `node_name "worker-2"`, `expected "worker-1"`)

	e.serveBytes([]byte("# nothing here\n"))
	_, err = src.Read(ctx, t0.Add(2*time.Second))
	requireErrorMentions(t, err, "no kepler_node_cpu_joules_total")

	e.serve(t, "kepler/02-steady.prom")
	m, err := src.Read(ctx, t0.Add(3*time.Second))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, m.Interval)
	require.InDelta(t, 60, m.TotalDeltaJ, 1e-9)
}

// BenchmarkKeplerSourceRead is one scrape of a Kepler exporter publishing
// 300 processes in 3 zones, parsed and turned into deltas.
func BenchmarkKeplerSourceRead(b *testing.B) {
	var page strings.Builder
	page.WriteString("# TYPE kepler_node_cpu_joules_total counter\n")
	for _, z := range []string{"package", "core", "dram"} {
		fmt.Fprintf(&page, "kepler_node_cpu_joules_total{node_name=\"n1\",path=\"/sys/class/powercap/intel-rapl:0\",zone=%q} 1000\n", z)
	}
	page.WriteString("# TYPE kepler_process_cpu_joules_total counter\n")
	for pid := range 300 {
		for _, z := range []string{"package", "core", "dram"} {
			fmt.Fprintf(&page, "kepler_process_cpu_joules_total{comm=\"p\",container_id=\"\",exe=\"/bin/p\",node_name=\"n1\",pid=\"%d\",state=\"running\",type=\"regular\",vm_id=\"\",zone=%q} %d\n", pid+1, z, pid)
		}
	}
	e := newExporter(b)
	e.serveBytes([]byte(page.String()))
	benchmarkReads(b, energy.NewKeplerSource(energy.KeplerOptions{URL: e.URL}), nil)
}

// benchmarkReads reads src once a (simulated) second, calling each on every
// reading, and reports the share of a core that costs at 1 Hz.
func benchmarkReads(b *testing.B, src energy.Source, each func(energy.Measurement)) {
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		m, err := src.Read(ctx, t0.Add(time.Duration(i+1)*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		if each != nil {
			each(m)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e7, "%core@1Hz")
}
