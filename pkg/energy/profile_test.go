package energy_test

import (
	"math"
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

// The quality rule: a fit is used only with enough readings and spread of
// utilisation, R² ≥ 0.8, a positive slope and an intercept ≥ 0. The fits
// a new user's constant 20 W fake meter gave (R² 0.175; R² 0.004 with a
// slope of −1.1 W) are refused, each error naming why.
func TestCalibrationQualityRule(t *testing.T) {
	good := energy.Calibration{Node: "m", Samples: 40, UtilSpread: 0.8, R2: 0.97, InterceptW: 20, SlopeW: 60, VCPUs: 4}
	require.NoError(t, good.Check())
	for name, tc := range map[string]struct {
		mod    func(*energy.Calibration)
		reason string
		msg    string
	}{
		"few readings":      {func(c *energy.Calibration) { c.Samples = 19 }, "samples", "19 readings"},
		"narrow spread":     {func(c *energy.Calibration) { c.UtilSpread = 0.1 }, "spread", "utilisation spread 0.100"},
		"flat meter":        {func(c *energy.Calibration) { c.R2 = 0.175 }, "r2", "R² 0.175"},
		"negative slope":    {func(c *energy.Calibration) { c.R2, c.SlopeW = 0.9, -1.1 }, "slope", "slope -1.1 W"},
		"negative idle":     {func(c *energy.Calibration) { c.InterceptW = -3 }, "intercept", "intercept -3 W"},
		"not a number (R²)": {func(c *energy.Calibration) { c.R2 = math.NaN() }, "r2", "R² NaN"},
	} {
		c := good
		tc.mod(&c)
		err := c.Check()
		require.ErrorIs(t, err, energy.ErrUntrustworthyFit, name)
		require.ErrorContains(t, err, tc.msg, name)
		require.Equal(t, tc.reason, energy.CheckReason(c), name)
	}

	// Calibrate reports the spread it fitted over; a constant meter fits
	// with R² near 0 and fails.
	util := make([]float64, 30)
	power := make([]float64, 30)
	for i := range util {
		util[i] = []float64{0.1, 0.5, 0.9}[i%3]
		power[i] = 20 + 0.01*float64(i%7)
	}
	fit, err := energy.Calibrate("flat", "rapl", energy.NodeFacts{VCPUs: 4}, util, power, time.Now())
	require.NoError(t, err)
	require.InDelta(t, 0.8, fit.UtilSpread, 1e-9)
	require.ErrorIs(t, fit.Check(), energy.ErrUntrustworthyFit)
}

// A RAPL fit covers the memory when the meter had a dram zone (or psys):
// the calibrated model then adds no memory platform watts; without one the
// memory's platform watts stay.
func TestCalibratedDoesNotCountMemoryTwice(t *testing.T) {
	require.True(t, energy.ZonesCoverMemory([]energy.ZoneEnergy{{Zone: "package-0"}, {Zone: "package-0/dram"}}))
	require.True(t, energy.ZonesCoverMemory([]energy.ZoneEnergy{{Zone: "psys"}}))
	require.False(t, energy.ZonesCoverMemory([]energy.ZoneEnergy{{Zone: "package-0"}, {Zone: "package-0/core"}}))

	p := energy.DefaultProfile(energy.NodeFacts{VCPUs: 8, MemoryGiB: 23.5}) // 9.2 W of memory
	cal := energy.Calibration{Node: "m1", VCPUs: 8, InterceptW: 20, SlopeW: 40, CoversMemory: true}
	c := p.Calibrated(cal)
	require.InDelta(t, 20, c.IdleWatts(), 1e-9, "the meter read 20 W at idle; the model of the same node says so")
	require.InDelta(t, 60, c.MaxWatts(), 1e-9)
	cal.CoversMemory = false
	c = p.Calibrated(cal)
	require.InDelta(t, 20+p.PlatformWatts, c.IdleWatts(), 1e-9, "packages only: the memory is added")
}
