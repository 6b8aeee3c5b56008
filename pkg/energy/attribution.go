package energy

import (
	"maps"
	"math"
	"slices"
)

// Attribution divides a node's energy over one interval among workloads.
// The parts plus Unattributed equal the node total.
type Attribution struct {
	Parts        map[string]float64 // joules per workload
	Unattributed float64            // idle and unaccounted (system, other processes) joules
}

// Attribute splits totalJ, the node's energy over an interval in which the
// node's CPU times advanced by cpu, among workloads by the CPU seconds each
// used in that interval (summed over CPUs, like cpu).
//
// This is Kepler's method: the active share of the energy is
// totalJ × busy/total, and each workload gets its share of the busy time,
// which comes to totalJ × workload seconds / total seconds. Since workload
// and node times are sampled at slightly different instants, the workloads
// can together appear to exceed the busy time; they are then scaled down to
// it, so they never take idle energy. Negative, NaN and infinite inputs
// count as 0. Every part and Unattributed is ≥ 0, and
// Σ Parts + Unattributed = totalJ within floating-point rounding.
func Attribute(totalJ float64, cpu CPUTimes, workloadCPUSeconds map[string]float64) Attribution {
	total := nonNegative(cpu.TotalSeconds)
	busy := min(nonNegative(cpu.BusySeconds), total)
	// Sum in a fixed order so identical inputs give identical outputs.
	var used float64
	for _, name := range slices.Sorted(maps.Keys(workloadCPUSeconds)) {
		used += nonNegative(workloadCPUSeconds[name])
	}
	// Joules per CPU second of a workload: totalJ / total, scaled down
	// when the workloads appear to exceed the busy time.
	var perSecond float64
	if total > 0 && used > 0 {
		perSecond = nonNegative(totalJ) / total
		if used > busy {
			perSecond *= busy / used
		}
	}
	joules := make(map[string]float64, len(workloadCPUSeconds))
	for name, s := range workloadCPUSeconds {
		joules[name] = nonNegative(s) * perSecond
	}
	return Split(totalJ, joules)
}

// nonNegative maps NaN, ±Inf and negative values to 0.
func nonNegative(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}
