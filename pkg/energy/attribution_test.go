package energy_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestAttribute(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	cpu := func(busy, total float64) energy.CPUTimes {
		return energy.CPUTimes{BusySeconds: busy, TotalSeconds: total}
	}
	type shares = map[string]float64
	tests := []struct {
		name      string
		totalJ    float64
		cpu       energy.CPUTimes
		workloads shares
		wantParts shares
		wantUnatt float64
	}{
		// Kepler: active = 100 J × 50/100 = 50 J, split 20:30 of busy.
		{"CPU-time share", 100, cpu(50, 100), shares{"flink": 20, "kafka": 30}, shares{"flink": 20, "kafka": 30}, 50},
		{"part of busy time is other processes", 80, cpu(4, 8), shares{"flink": 1}, shares{"flink": 10}, 70},
		{"workloads exceed busy time: scaled down to it", 100, cpu(50, 100), shares{"flink": 40, "kafka": 60}, shares{"flink": 20, "kafka": 30}, 50},
		{"bad inputs count as zero", 100, cpu(50, 100), shares{"neg": -5, "nan": nan, "inf": inf, "ok": 10}, shares{"neg": 0, "nan": 0, "inf": 0, "ok": 10}, 90},
		{"no CPU time on the node", 30, cpu(0, 0), shares{"flink": 5}, shares{"flink": 0}, 30},
		{"busy above total is clamped", 10, cpu(20, 10), shares{"a": 30, "b": 10}, shares{"a": 7.5, "b": 2.5}, 0},
		{"negative total energy", -3, cpu(1, 2), shares{"a": 1}, shares{"a": 0}, 0},
		{"NaN node times", 10, cpu(nan, nan), shares{"a": 1}, shares{"a": 0}, 10},
		{"no workloads", 10, cpu(1, 2), nil, shares{}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := energy.Attribute(tt.totalJ, tt.cpu, tt.workloads)
			require.Len(t, got.Parts, len(tt.wantParts))
			for name, want := range tt.wantParts {
				require.InDelta(t, want, got.Parts[name], 1e-9, name)
			}
			require.InDelta(t, tt.wantUnatt, got.Unattributed, 1e-9)
		})
	}
}

// TestAttributeConserves checks, over many random intervals including
// sampling skew, zeros and garbage values, that nothing is negative and
// that the parts plus the unattributed energy add up to the node total.
func TestAttributeConserves(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 2025))
	special := []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1), 1e-300, 1e300, math.MaxFloat64}
	value := func(scale float64) float64 {
		if rng.IntN(10) == 0 {
			return special[rng.IntN(len(special))]
		}
		return rng.Float64() * scale
	}
	for i := range 50_000 {
		totalJ := value(math.Pow(10, float64(rng.IntN(12)-3)))
		if totalJ == math.MaxFloat64 {
			totalJ = 1e300 // at the very top of the range the check's own sum overflows
		}
		total := value(math.Pow(10, float64(rng.IntN(8)-2)))
		cpu := energy.CPUTimes{BusySeconds: value(total * 1.2), TotalSeconds: total}
		workloads := make(map[string]float64)
		for w := range rng.IntN(8) {
			workloads[string(rune('a'+w))] = value(cpu.BusySeconds * 0.8)
		}

		got := energy.Attribute(totalJ, cpu, workloads)

		wantTotal := totalJ
		if math.IsNaN(wantTotal) || math.IsInf(wantTotal, 0) || wantTotal < 0 {
			wantTotal = 0
		}
		sum := got.Unattributed
		if got.Unattributed < 0 || math.IsNaN(got.Unattributed) {
			t.Fatalf("case %d: Attribute(%v, %+v, %v): Unattributed = %v", i, totalJ, cpu, workloads, got.Unattributed)
		}
		if len(got.Parts) != len(workloads) {
			t.Fatalf("case %d: %d parts for %d workloads", i, len(got.Parts), len(workloads))
		}
		for name, part := range got.Parts {
			if part < 0 || math.IsNaN(part) || math.IsInf(part, 0) {
				t.Fatalf("case %d: Attribute(%v, %+v, %v): part %s = %v", i, totalJ, cpu, workloads, name, part)
			}
			sum += part
		}
		if math.Abs(sum-wantTotal) > 1e-9*math.Max(1, wantTotal) {
			t.Fatalf("case %d: Attribute(%v, %+v, %v): parts + unattributed = %v, want %v", i, totalJ, cpu, workloads, sum, wantTotal)
		}
	}
}

func BenchmarkAttribute(b *testing.B) {
	workloads := map[string]float64{"flink-jobmanager": 0.4, "flink-taskmanager-0": 3.1, "flink-taskmanager-1": 2.9, "kafka-0": 1.2, "loadgen": 0.8}
	cpu := energy.CPUTimes{BusySeconds: 9.5, TotalSeconds: 40}
	for b.Loop() {
		energy.Attribute(123.4, cpu, workloads)
	}
}
