package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
// of its vcpus, at a utilisation that changes every second, and the counter
// by the energy that power draws, both by the real time elapsed since the
// previous step (the collector divides by real time too).
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
	u := calibrationUtils[int(now.Sub(n.start).Seconds())%len(calibrationUtils)]
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

// statFor is a /proc/stat of vcpus CPUs, busy of total ticks.
func statFor(vcpus, busy, total int) string {
	stat := fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\n", busy, total-busy)
	for i := range vcpus {
		stat += fmt.Sprintf("cpu%d %d 0 0 %d 0 0 0 0 0 0\n", i, busy/vcpus, (total-busy)/vcpus)
	}
	return stat
}

func newMeteredNode(tb testing.TB, vcpus int, idleW, slopeW float64, maxPowerUW uint64) *meteredNode {
	n := &meteredNode{proc: tb.TempDir(), powercap: raplTree(tb, maxPowerUW), vcpus: vcpus, idleW: idleW, slopeW: slopeW,
		busy: 1000, total: 100000, energyUJ: 1e6}
	writeNodeFacts(tb, n.proc, "Test CPU @ 2.0GHz", 16<<20, vcpus, int(n.busy), int(n.total))
	return n
}

// A node with a RAPL meter (a fake powercap tree whose package draws
// 20 W + 60 W × utilisation, driven with a fake /proc/stat) calibrates the
// model: the fit — intercept, slope, R², residual — is stored, and a node
// without a meter (8 vCPUs, idle) is then estimated with the fitted watts
// per vCPU: 8 × 20/4 W plus its platform watts, its configuration labelled
// "estimated (calibrated on metered)".
func TestCalibrationOnAMeteredNodeServesTheModelledOnes(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	metered := newMeteredNode(t, 4, 20, 60, 0)
	metered.run(t)
	modelled := t.TempDir()
	writeNodeFacts(t, modelled, "Other CPU", 8<<20, 8, 1000, 10000)

	// Readings 500 ms apart: the fixture steps every 10 ms by the real
	// clock, as the meter reads it, so each pair is off by a step at most.
	cfg := testConfig("c1", 500*time.Millisecond)
	cfg.Sources = []collector.SourceConfig{
		{ID: "rapl/metered", Kind: collector.KindRAPL, Node: "metered", PowercapRoot: metered.powercap, ProcRoot: metered.proc},
		{ID: "model/modelled", Kind: collector.KindModel, Node: "modelled", ProcRoot: modelled},
	}
	in := startCollector(t, url, cfg, st)
	target := events.Target{ID: "pod/modelled/sut-0", Kind: "pod", Node: "modelled", Role: "sut", Pod: "sut-0", Namespace: "gf"}
	publishAssignMeters(t, in.b, "r1", []events.Target{target}, &events.CollectMeters{IntervalMs: 500, Source: "auto"})

	var fits []store.PowerCalibration
	testenv.Eventually(t, 60*time.Second, "a fit of the metered node stored", func() bool {
		var err error
		fits, err = st.PowerCalibrations(context.Background(), "metered")
		require.NoError(t, err)
		return len(fits) > 0
	})
	fit := fits[0]
	t.Logf("fit of metered (true 20 W + 60 W × u): %+v", fit)
	require.Equal(t, "rapl", fit.Source)
	require.Equal(t, uint32(4), fit.VCPUs)
	require.InDelta(t, 20, fit.InterceptW, 4, "%+v", fit)
	require.InDelta(t, 60, fit.SlopeW, 8, "%+v", fit)
	require.Greater(t, fit.R2, 0.8, "%+v", fit)
	require.Less(t, fit.ResidualW, 8.0, "%+v", fit)

	var cal store.RunMeter
	testenv.Eventually(t, 30*time.Second, "the modelled node uses the calibrated model", func() bool {
		ms, err := st.RunMeters(context.Background(), "e1")
		require.NoError(t, err)
		for _, m := range ms {
			if m.Node == "modelled" && m.Label == "estimated (calibrated on metered)" {
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
	wantIdle := 8*prof.Calibration.InterceptW/4 + 8*energy.DefaultMemoryWattsPerGiB
	require.InDelta(t, wantIdle, prof.IdleWatts(), 1e-9)
	testenv.Eventually(t, 20*time.Second, "the modelled node's power is the calibrated idle power", func() bool {
		var p float64
		err := st.Conn().QueryRow(context.Background(),
			"SELECT power_w FROM samples WHERE node = 'modelled' AND scope = 'node' ORDER BY ts_ms DESC LIMIT 1").Scan(&p)
		return err == nil && p > wantIdle-0.5 && p < wantIdle+0.5
	})
}
