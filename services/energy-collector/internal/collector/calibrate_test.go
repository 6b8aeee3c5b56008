package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// raplTree is a powercap tree with one package zone; maxPowerUW > 0 adds
// its constraint file.
func raplTree(tb testing.TB, maxPowerUW uint64) string {
	tb.Helper()
	root := tb.TempDir()
	zone := filepath.Join(root, "intel-rapl:0")
	require.NoError(tb, os.MkdirAll(zone, 0o755))
	require.NoError(tb, os.WriteFile(filepath.Join(zone, "name"), []byte("package-0\n"), 0o644))
	require.NoError(tb, os.WriteFile(filepath.Join(zone, "max_energy_range_uj"), []byte("262143328850\n"), 0o644))
	require.NoError(tb, writeAtomic(filepath.Join(zone, "energy_uj"), "1000000\n"))
	if maxPowerUW > 0 {
		require.NoError(tb, os.WriteFile(filepath.Join(zone, "constraint_0_max_power_uw"), []byte(fmt.Sprintf("%d\n", maxPowerUW)), 0o644))
	}
	return root
}

// meteredNode drives a fake node with a RAPL package counter whose power is
// truly idleW + slopeW × utilisation: every step it advances the CPU times
// of its vcpus, at a utilisation that changes every 2 seconds, and the counter
// by the energy that power draws, both by the real time elapsed since the
// previous step (the collector divides by real time too). Stepped by run's
// goroutine, or by the collector's clock (clock).
type meteredNode struct {
	proc, powercap string
	vcpus          int
	idleW, slopeW  float64

	mu          sync.Mutex
	start, last time.Time
	busy, total float64 // ticks (USER_HZ 100)
	energyUJ    float64 // the counter
	jumpUJ      float64 // added once at the next step (a spike)
}

var calibrationUtils = []float64{0.1, 0.5, 0.9, 0.3, 0.7}

func (n *meteredNode) step(now time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stepLocked(now)
}

func (n *meteredNode) stepLocked(now time.Time) error {
	if !now.After(n.last) {
		return nil // a time already stepped past
	}
	u := calibrationUtils[int(now.Sub(n.start).Seconds()/2)%len(calibrationUtils)] // held 2 s: few readings straddle a change
	dt := now.Sub(n.last).Seconds()
	n.last = now
	ticks := dt * 100 * float64(n.vcpus)
	n.busy += u * ticks
	n.total += ticks
	n.energyUJ += (n.idleW+n.slopeW*u)*dt*1e6 + n.jumpUJ
	n.jumpUJ = 0
	// The counter first, then the CPU times, as the meter reads them.
	if err := writeAtomic(filepath.Join(n.powercap, "intel-rapl:0", "energy_uj"), fmt.Sprintf("%d\n", uint64(n.energyUJ))); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(n.proc, "stat"), statFor(n.vcpus, int(n.busy), int(n.total)))
}

func (n *meteredNode) jump(uj float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.jumpUJ += uj
}

// run steps the node every 10 ms until the test ends.
func (n *meteredNode) run(tb testing.TB) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	n.mu.Lock()
	n.start, n.last = time.Now(), time.Now()
	n.mu.Unlock()
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				if err := n.step(now); err != nil {
					tb.Errorf("advance the metered node: %v", err)
					return
				}
			}
		}
	}()
	tb.Cleanup(func() { close(stop); wg.Wait() })
}

// clock is the real clock for a collector reading this node: each time it
// tells, it first steps the node to that time. The collector asks the time
// just before it reads the node's files, so they hold what the node spent
// up to the reading's timestamp however late this process runs. (Stepped
// by its own goroutine every 10 ms, the node was as stale as that
// goroutine was late: beside three busy processes on 2 cores the fits fell
// to R² 0.004–0.71 and 2 of 9 calibration tests stored no fit within a
// minute.)
func (n *meteredNode) clock(tb testing.TB) clock.WithTicker {
	n.mu.Lock()
	n.start, n.last = time.Now(), time.Now()
	n.mu.Unlock()
	return steppingClock{n: n, tb: tb}
}

// steppingClock is the real clock stepping a meteredNode to each Now.
type steppingClock struct {
	clock.RealClock
	n  *meteredNode
	tb testing.TB
}

func (c steppingClock) Now() time.Time {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	now := time.Now()
	if err := c.n.stepLocked(now); err != nil {
		c.tb.Errorf("advance the metered node: %v", err)
	}
	return now
}

// Since is measured on Now, as the real clock's is.
func (c steppingClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// statFor is a /proc/stat of vcpus CPUs, busy of total ticks.
func statFor(vcpus, busy, total int) string {
	stat := fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\n", busy, total-busy)
	for i := range vcpus {
		stat += fmt.Sprintf("cpu%d %d 0 0 %d 0 0 0 0 0 0\n", i, busy/vcpus, (total-busy)/vcpus)
	}
	return stat
}

// addDRAMZone gives a powercap tree's package a dram sub-zone (counter
// still: 0 W), so the meter's node total covers the memory.
func addDRAMZone(tb testing.TB, root string) {
	tb.Helper()
	zone := filepath.Join(root, "intel-rapl:0", "intel-rapl:0:0")
	require.NoError(tb, os.MkdirAll(zone, 0o755))
	require.NoError(tb, os.WriteFile(filepath.Join(zone, "name"), []byte("dram\n"), 0o644))
	require.NoError(tb, os.WriteFile(filepath.Join(zone, "max_energy_range_uj"), []byte("65712999613\n"), 0o644))
	require.NoError(tb, os.WriteFile(filepath.Join(zone, "energy_uj"), []byte("5000\n"), 0o644))
}

func newMeteredNode(tb testing.TB, vcpus int, idleW, slopeW float64, maxPowerUW uint64) *meteredNode {
	n := &meteredNode{proc: tb.TempDir(), powercap: raplTree(tb, maxPowerUW), vcpus: vcpus, idleW: idleW, slopeW: slopeW,
		busy: 1000, total: 100000, energyUJ: 1e6}
	writeNodeFacts(tb, n.proc, "Test CPU @ 2.0GHz", 16<<20, vcpus, int(n.busy), int(n.total))
	return n
}

// startCalibration starts a collector sampling metered by RAPL and a node
// "modelled" (8 vCPUs, 8 GiB, CPU model cpuModel) by the model, and assigns
// run r1 a target on the modelled node.
//
// Readings are 1 s apart; the collector's clock steps the fixture
// (meteredNode.clock), so each reading is the node's at its timestamp.
func startCalibration(t *testing.T, url string, st *store.Store, metered *meteredNode, cpuModel string) (*instance, events.Target) {
	t.Helper()
	modelled := t.TempDir()
	writeNodeFacts(t, modelled, cpuModel, 8<<20, 8, 1000, 10000)
	cfg := testConfig("c1", time.Second)
	cfg.Sources = []collector.SourceConfig{
		{ID: "rapl/metered", Kind: collector.KindRAPL, Node: "metered", PowercapRoot: metered.powercap, ProcRoot: metered.proc},
		{ID: "model/modelled", Kind: collector.KindModel, Node: "modelled", ProcRoot: modelled},
	}
	in := newCollectorOn(t, url, cfg, st, metered.clock(t))
	in.start(t)
	target := events.Target{ID: "pod/modelled/sut-0", Kind: "pod", Node: "modelled", Role: "sut", Pod: "sut-0", Namespace: "gf"}
	publishAssignMeters(t, in.b, "r1", []events.Target{target}, &events.CollectMeters{IntervalMs: 1000, Source: "auto"})
	return in, target
}

// A node with a RAPL meter (a fake powercap tree whose package draws
// 20 W + 60 W × utilisation, driven with a fake /proc/stat) calibrates the
// model: the fit — intercept, slope, R², residual — is stored, and a node
// without a meter (8 vCPUs, idle) is then estimated with the fitted watts
// per vCPU: 8 × 20/4 W, its configuration labelled "estimated (calibrated
// on metered)". The metered node's RAPL has a dram zone, so the fit holds
// the memory: the modelled node's memory platform watts are not added on
// top (they were: 8 GiB × 0.392 W counted twice).
func TestCalibrationOnAMeteredNodeServesTheModelledOnes(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	metered := newMeteredNode(t, 4, 20, 60, 0)
	addDRAMZone(t, metered.powercap)
	in, target := startCalibration(t, url, st, metered, "Other CPU")

	fits := storedRows(t, 60*time.Second, "a fit of the metered node stored", 1, func() ([]store.PowerCalibration, error) {
		return st.PowerCalibrations(context.Background(), "metered")
	})
	fit := fits[0]
	t.Logf("fit of metered (true 20 W + 60 W × u): %+v", fit)
	require.Equal(t, "rapl", fit.Source)
	require.Equal(t, uint32(4), fit.VCPUs)
	require.InDelta(t, 20, fit.InterceptW, 4, "%+v", fit)
	require.InDelta(t, 60, fit.SlopeW, 8, "%+v", fit)
	require.Greater(t, fit.R2, 0.8, "%+v", fit)
	require.Less(t, fit.ResidualW, 8.0, "%+v", fit)

	// r1 began before the fit and keeps its model (a run's model is fixed
	// for the run); a run after it takes the fit.
	publishRelease(t, in.b, "r1")
	publishAssignMeters(t, in.b, "r2", []events.Target{target}, &events.CollectMeters{IntervalMs: 1000, Source: "auto"})
	var cal store.RunMeter
	testenv.Eventually(t, 30*time.Second, "the modelled node uses the calibrated model", func() bool {
		ms, err := st.RunMeters(context.Background(), "e1")
		require.NoError(t, err)
		for _, m := range ms {
			if m.RunID == "r2" && m.Node == "modelled" && m.Label == "estimated (calibrated on metered)" {
				cal = m
				return true
			}
		}
		return false
	})
	var prof energy.ModelProfile
	require.NoError(t, json.Unmarshal([]byte(cal.Model), &prof))
	require.Equal(t, 8, prof.VCPUs)
	require.NotNil(t, prof.Calibration)
	require.Equal(t, "metered", prof.Calibration.Node)
	require.True(t, prof.Calibration.CoversMemory, "the fit's meter had a dram zone")
	require.Zero(t, prof.PlatformWatts, "memory measured by the fit is not added again")
	wantIdle := 8 * prof.Calibration.InterceptW / 4
	require.InDelta(t, wantIdle, prof.IdleWatts(), 1e-9)
	testenv.Eventually(t, 20*time.Second, "the modelled node's power is the calibrated idle power", func() bool {
		var p float64
		err := st.Conn().QueryRow(context.Background(),
			"SELECT power_w FROM samples WHERE node = 'modelled' AND scope = 'node' ORDER BY ts_ms DESC LIMIT 1").Scan(&p)
		return err == nil && p > wantIdle-0.5 && p < wantIdle+0.5
	})
}

// A RAPL node whose meter does not follow utilisation (a constant 20 W, as
// a new user's fake node read) gives fits with R² near 0 and a flat slope:
// they are refused by the quality rule — counted with their reason, not
// stored, not shared — and a node of the same CPU model without a meter
// keeps the uncalibrated profile (before: it took the flat fit, and its
// power and every run's energy on it changed).
func TestPoorCalibrationIsNotUsed(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	metered := newMeteredNode(t, 4, 20, 0, 0)                           // 20 W whatever the utilisation
	in, _ := startCalibration(t, url, st, metered, "Test CPU @ 2.0GHz") // the metered node's CPU model

	// Two fits due (40 readings, and a few more for them to be written)...
	testenv.Eventually(t, 90*time.Second, "45 readings of the metered node stored", func() bool {
		return countRows(t, st, "node = 'metered' AND scope = 'node'") >= 45
	})
	// ... and both refused: not stored, not used, counted.
	fits, err := st.PowerCalibrations(context.Background(), "metered")
	require.NoError(t, err)
	require.Empty(t, fits, "a refused fit is not stored")
	ms, err := st.RunMeters(context.Background(), "e1")
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	want := energy.DefaultProfile(energy.NodeFacts{VCPUs: 8, MemoryGiB: 8})
	for _, m := range ms {
		require.Equal(t, "estimated", m.Label, "%+v", m)
		var prof energy.ModelProfile
		require.NoError(t, json.Unmarshal([]byte(m.Model), &prof))
		require.Nil(t, prof.Calibration)
		require.InDelta(t, want.IdleWatts(), prof.IdleWatts(), 1e-9)
	}
	n, _ := in.gauge(t, collector.MetricCalRejected, "rapl/metered")
	require.GreaterOrEqual(t, n, 2.0, "fits refused")
}

// A run's model is fixed for the run: a calibration published while a run
// is active on a modelled node does not change that run's model (before,
// the node's model switched on the next reading, mid-run and unflagged);
// a node with no active run takes it at once, and a later run on the
// first node does too.
func TestCalibrationIsFixedForTheRun(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	metered := newMeteredNode(t, 4, 20, 60, 0)
	nodeA, nodeB := t.TempDir(), t.TempDir()
	writeNodeFacts(t, nodeA, "Other CPU", 8<<20, 8, 1000, 10000)
	writeNodeFacts(t, nodeB, "Other CPU", 8<<20, 8, 1000, 10000)

	cfg := testConfig("c1", time.Second)
	cfg.Sources = []collector.SourceConfig{
		{ID: "rapl/metered", Kind: collector.KindRAPL, Node: "metered", PowercapRoot: metered.powercap, ProcRoot: metered.proc},
		{ID: "model/a", Kind: collector.KindModel, Node: "a", ProcRoot: nodeA},
		{ID: "model/b", Kind: collector.KindModel, Node: "b", ProcRoot: nodeB},
	}
	in := newCollectorOn(t, url, cfg, st, metered.clock(t))
	in.start(t)
	target := func(node string) []events.Target {
		return []events.Target{{ID: "pod/" + node + "/sut-0", Kind: "pod", Node: node, Role: "sut", Pod: "sut-0", Namespace: "gf"}}
	}
	meters := &events.CollectMeters{IntervalMs: 1000, Source: "auto"}
	labels := func(run string) []string {
		ms, err := st.RunMeters(context.Background(), "e1")
		require.NoError(t, err)
		var out []string
		for _, m := range ms {
			if m.RunID == run {
				out = append(out, m.Label)
			}
		}
		return out
	}
	publishAssignMeters(t, in.b, "r1", target("a"), meters)
	testenv.Eventually(t, 30*time.Second, "r1 on node a recorded", func() bool { return len(labels("r1")) > 0 })
	require.Equal(t, []string{"estimated"}, labels("r1"), "r1 began before any fit")

	testenv.Eventually(t, 60*time.Second, "a fit of the metered node stored", func() bool {
		fits, err := st.PowerCalibrations(context.Background(), "metered")
		require.NoError(t, err)
		return len(fits) > 0
	})
	publishAssignMeters(t, in.b, "r2", target("b"), meters)
	testenv.Eventually(t, 30*time.Second, "r2, begun after the fit, calibrated", func() bool {
		return slices.Contains(labels("r2"), "estimated (calibrated on metered)")
	})
	// Node a goes on sampling r1 for a few more readings after the
	// collector knew the fit.
	seen := time.Now().UnixMilli()
	testenv.Eventually(t, 30*time.Second, "node a sampled 3 times more", func() bool {
		return countRows(t, st, "node = 'a' AND scope = 'node' AND ts_ms > ?", seen) >= 3
	})
	require.Equal(t, []string{"estimated"}, labels("r1"), "r1's model stays the one it began with")

	// A collector restarted mid-run keeps each run's model: it reads it
	// back from the collectors' bucket instead of taking whatever fit it
	// knows at its first reading (none yet, or the newest) — r1 stays
	// uncalibrated, r2 calibrated.
	in.stop(t)
	in = startCollector(t, url, cfg, st)
	seen = time.Now().UnixMilli()
	testenv.Eventually(t, 30*time.Second, "nodes a and b sampled 3 times after the restart", func() bool {
		return countRows(t, st, "node = 'a' AND scope = 'node' AND ts_ms > ?", seen) >= 3 &&
			countRows(t, st, "node = 'b' AND scope = 'node' AND ts_ms > ?", seen) >= 3
	})
	for _, l := range labels("r1") { // a row per incarnation
		require.Equal(t, "estimated", l, "r1's model survives the collector's restart")
	}
	for _, l := range labels("r2") {
		require.Equal(t, "estimated (calibrated on metered)", l, "r2's model survives the collector's restart")
	}

	publishRelease(t, in.b, "r1")
	publishAssignMeters(t, in.b, "r3", target("a"), meters)
	testenv.Eventually(t, 30*time.Second, "r3, a later run on node a, calibrated", func() bool {
		return slices.Contains(labels("r3"), "estimated (calibrated on metered)")
	})
}
