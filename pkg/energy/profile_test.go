package energy_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// The profile comes from the node's facts: vCPUs from stat, CPU model from
// cpuinfo, memory from meminfo; idle and max power scale with the vCPUs and
// include the memory's platform watts.
func TestProfileFromNodeFacts(t *testing.T) {
	proc := t.TempDir()
	writeFile(t, proc, "stat", "cpu  10 0 0 90 0 0 0 0 0 0\n"+
		"cpu0 1 0 0 9 0 0 0 0 0 0\ncpu1 1 0 0 9 0 0 0 0 0 0\ncpu2 1 0 0 9 0 0 0 0 0 0\ncpu3 1 0 0 9 0 0 0 0 0 0\n")
	writeFile(t, proc, "cpuinfo", "processor\t: 0\nvendor_id\t: X\nmodel name\t: Xeon Test 8000\n")
	writeFile(t, proc, "meminfo", "MemTotal:       16777216 kB\nMemFree:  1 kB\n")
	f, err := energy.ReadNodeFacts(proc)
	require.NoError(t, err)
	require.Equal(t, energy.NodeFacts{VCPUs: 4, CPUModel: "Xeon Test 8000", MemoryGiB: 16}, f)
	p := energy.DefaultProfile(f)
	require.NoError(t, p.Validate())
	require.InDelta(t, 4*0.74+16*0.392, p.IdleWatts(), 1e-9)
	require.InDelta(t, 4*3.5+16*0.392, p.MaxWatts(), 1e-9)
	require.Equal(t, "estimated", p.Label())

	// A 64-vCPU node is modelled as one, not as the old fixed 2 vCPUs.
	big := energy.DefaultProfile(energy.NodeFacts{VCPUs: 64, MemoryGiB: 256})
	require.InDelta(t, 64*0.74+256*0.392, big.IdleWatts(), 1e-9)

	// Calibrated on a 4-vCPU node fitted at 20 W + 60 W × u.
	cal := energy.Calibration{Node: "m1", VCPUs: 4, InterceptW: 20, SlopeW: 60}
	c := big.Calibrated(cal)
	require.InDelta(t, 64*5+256*0.392, c.IdleWatts(), 1e-9)
	require.InDelta(t, 64*20+256*0.392, c.MaxWatts(), 1e-9)
	require.Equal(t, "estimated (calibrated on m1)", c.Label())
}

func TestFitLinear(t *testing.T) {
	x := []float64{0, 0.25, 0.5, 0.75, 1}
	y := []float64{20.5, 34.5, 50.5, 64.5, 80.5} // about 20.5 W + 60 W × x, with ±0.5 W of noise
	a, b, r2, rms, err := energy.FitLinear(x, y)
	require.NoError(t, err)
	require.InDelta(t, 20.5, a, 1)
	require.InDelta(t, 60, b, 2)
	require.Greater(t, r2, 0.99)
	require.Less(t, rms, 1.0)

	_, _, _, _, err = energy.FitLinear([]float64{0.3, 0.3, 0.3}, []float64{1, 2, 3})
	require.ErrorIs(t, err, energy.ErrTooFewPoints, "no spread in utilisation")
	_, _, _, _, err = energy.FitLinear([]float64{0.1, 0.2}, []float64{1, 2})
	require.ErrorIs(t, err, energy.ErrTooFewPoints)
	_, err = energy.Calibrate("n", "rapl", energy.NodeFacts{VCPUs: 2}, []float64{0.1, 0.1, 0.1}, []float64{1, 1, 1}, time.Now())
	require.ErrorContains(t, err, "calibrate the model on n")
}
