package energy_test

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/energy"
)

// Whatever a meter's API returns — samples out of order, repeated, far
// apart, out of range — the integral is finite, never negative, its
// bridged part within it, and its uncovered time within the window.
func FuzzIntegratePower(f *testing.F) {
	f.Add([]byte{0, 100, 1, 120, 5, 90, 6, 255}, true, uint8(1))
	f.Add([]byte{3, 10, 1, 20, 1, 20}, false, uint8(5))
	f.Fuzz(func(t *testing.T, raw []byte, averaged bool, period uint8) {
		ps := energy.PowerSamples{Averaged: averaged, Period: time.Duration(period) * time.Second, Zone: energy.ZoneWall}
		for i := 0; i+1 < len(raw); i += 2 {
			ps.Samples = append(ps.Samples, energy.PowerSample{Time: t0.Add(time.Duration(raw[i]) * time.Second), Watts: float64(raw[i+1]) * 10})
		}
		if len(raw) >= 8 {
			ps.Samples = append(ps.Samples, energy.PowerSample{Time: t0, Watts: math.Float64frombits(binary.LittleEndian.Uint64(raw[:8]))})
		}
		start, end := t0.Add(20*time.Second), t0.Add(200*time.Second)
		in := energy.IntegratePower(ps, start, end, 0)
		win := end.Sub(start).Seconds()
		if math.IsNaN(in.Joules) || math.IsInf(in.Joules, 0) || in.Joules < -1e-9 {
			t.Fatalf("joules %v", in.Joules)
		}
		if in.BridgedJ < -1e-9 || in.BridgedJ > in.Joules+1e-6 {
			t.Fatalf("bridged %v of %v", in.BridgedJ, in.Joules)
		}
		if in.UncoveredS < 0 || in.UncoveredS > win+1e-9 {
			t.Fatalf("uncovered %v of %v", in.UncoveredS, win)
		}
		if in.Joules > energy.DefaultMaxPowerW*win+1e-6 {
			t.Fatalf("joules %v above the bound over the window", in.Joules)
		}
	})
}
