package energy_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestCounterUpdate(t *testing.T) {
	const maxRange = 10_000_000 // µJ: 10 J range makes the numbers easy to read

	type step struct {
		raw, maxRange uint64
		wantJ         float64
		wantOK        bool
	}
	tests := []struct {
		name       string
		steps      []step
		wantTotalJ float64
		wantResets int
	}{
		{
			name:  "first update is the baseline",
			steps: []step{{raw: 5_000_000, maxRange: maxRange, wantJ: 0, wantOK: false}},
		},
		{
			name: "increase",
			steps: []step{
				{raw: 1_000_000, maxRange: maxRange},
				{raw: 3_500_000, maxRange: maxRange, wantJ: 2.5, wantOK: true},
				{raw: 3_500_000, maxRange: maxRange, wantJ: 0, wantOK: true},
				{raw: 4_000_000, maxRange: maxRange, wantJ: 0.5, wantOK: true},
			},
			wantTotalJ: 3,
		},
		{
			name: "wrap",
			steps: []step{
				{raw: 9_000_000, maxRange: maxRange},
				{raw: 500_000, maxRange: maxRange, wantJ: 1.5, wantOK: true}, // (10 − 9) + 0.5
				{raw: 1_500_000, maxRange: maxRange, wantJ: 1, wantOK: true},
			},
			wantTotalJ: 2.5,
		},
		{
			name: "wrap from exactly the range to zero",
			steps: []step{
				{raw: maxRange, maxRange: maxRange},
				{raw: 0, maxRange: maxRange, wantJ: 0, wantOK: true},
			},
		},
		{
			name: "decrease with unknown range is a reset",
			steps: []step{
				{raw: 9_000_000, maxRange: 0},
				{raw: 500_000, maxRange: 0, wantJ: 0, wantOK: false},
				{raw: 700_000, maxRange: 0, wantJ: 0.2, wantOK: true}, // counts from the new baseline
			},
			wantTotalJ: 0.2,
			wantResets: 1,
		},
		{
			name: "wrap implying more than half the range went unseen is a reset",
			steps: []step{
				{raw: 2_000_000, maxRange: maxRange},
				{raw: 1_000_000, maxRange: maxRange, wantJ: 0, wantOK: false}, // would be 9 J
				{raw: 1_250_000, maxRange: maxRange, wantJ: 0.25, wantOK: true},
			},
			wantTotalJ: 0.25,
			wantResets: 1,
		},
		{
			name: "previous value beyond the range is a reset",
			steps: []step{
				{raw: 20_000_000, maxRange: maxRange},
				{raw: 1_000_000, maxRange: maxRange, wantJ: 0, wantOK: false},
			},
			wantResets: 1,
		},
		{
			name: "range changing between samples",
			steps: []step{
				{raw: 9_000_000, maxRange: maxRange},
				{raw: 1_000_000, maxRange: 5_000_000, wantJ: 0, wantOK: false},
			},
			wantResets: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c energy.Counter
			for i, s := range tt.steps {
				gotJ, gotOK := c.Update(s.raw, s.maxRange)
				require.Equal(t, s.wantOK, gotOK, "step %d: ok", i)
				require.InDelta(t, s.wantJ, gotJ, 1e-9, "step %d: delta", i)
			}
			require.InDelta(t, tt.wantTotalJ, c.TotalJ(), 1e-9, "TotalJ")
			require.Equal(t, tt.wantResets, c.Resets(), "Resets")
		})
	}
}

// TestCounterNeverNegativeOrSpiking feeds random samples, with wraps,
// resets and unknown ranges, and checks that no delta is negative, that a
// decrease never yields more than half the range, and that TotalJ only grows.
func TestCounterNeverNegativeOrSpiking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		maxRange := rng.Uint64N(1 << 40)
		var c energy.Counter
		var prev uint64
		for i := range 500 {
			raw := rng.Uint64N(maxRange + 1)
			mr := maxRange
			if rng.IntN(20) == 0 {
				mr = 0 // range unknown for this sample
			}
			d, ok := c.Update(raw, mr)
			switch {
			case d < 0, !ok && d != 0:
				t.Fatalf("Update(%d, %d) = %v, %v", raw, mr, d, ok)
			case i > 0 && raw < prev && d > float64(maxRange/2)/1e6:
				t.Fatalf("Update(%d, %d) after %d = %v J: more than half the range", raw, mr, prev, d)
			case d > float64(maxRange)/1e6:
				t.Fatalf("Update(%d, %d) = %v J: more than the range", raw, mr, d)
			}
			prev = raw
		}
	}
}

func FuzzCounter(f *testing.F) {
	f.Add(uint64(9_000_000), uint64(500_000), uint64(10_000_000))
	f.Add(uint64(0), uint64(0), uint64(0))
	f.Add(uint64(1<<63), uint64(1), uint64(1<<62))
	f.Fuzz(func(t *testing.T, a, b, maxRange uint64) {
		var c energy.Counter
		c.Update(a, maxRange)
		d, ok := c.Update(b, maxRange)
		if d < 0 || (!ok && d != 0) || c.TotalJ() != d {
			t.Fatalf("Update(%d) after %d with range %d = %v, %v (total %v)", b, a, maxRange, d, ok, c.TotalJ())
		}
		if b < a && d > float64(maxRange/2)/1e6 {
			t.Fatalf("decrease %d → %d with range %d gave %v J", a, b, maxRange, d)
		}
	})
}
