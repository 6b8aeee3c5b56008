package energy

import (
	"fmt"
	"time"
)

// Sources of a NodeReading.
const (
	SourceRAPL  = "rapl"
	SourceModel = "model"
)

// ZoneEnergy is the energy of one measurement zone over an interval.
type ZoneEnergy struct {
	Zone        string  // e.g. "package-0", "package-0/dram", "psys"
	DeltaJ      float64 // joules over the interval
	PowerW      float64 // DeltaJ / interval; 0 on the baseline reading
	CumulativeJ float64 // monotonic since meter start (wraps resolved)
}

// NodeReading is what a NodeMeter measured over the interval ending at Time.
type NodeReading struct {
	Time     time.Time
	Interval time.Duration // since previous reading (0 on the first)
	Zones    []ZoneEnergy

	// Node total, never counting overlapping zones twice.
	TotalDeltaJ, TotalPowerW, TotalCumulativeJ float64

	CPU       CPUTimes // delta of node CPU times over the interval
	Estimated bool     // true when the numbers come from a model, not a meter
	Source    string   // SourceRAPL or SourceModel
	// Resets counts counters that went backwards or jumped implausibly in
	// this reading and were therefore not used as deltas: the reading
	// undercounts its interval, and says so.
	Resets int
	// Implausible lists the increases among Resets that no plausible
	// power explains (MaxPlausibleJ): not counted, reported for the flag.
	Implausible []Implausible
}

// NodeMeter measures a node's energy.
//
// Read samples the meter at now and returns the energy spent since the
// previous successful Read. The first call returns a baseline reading with
// zero deltas and Interval 0. A failed Read leaves the meter's state
// unchanged, so the next successful Read covers the whole gap. now must not
// go backwards. A NodeMeter may be used by one goroutine at a time.
type NodeMeter interface {
	Read(now time.Time) (NodeReading, error)
}

// lastReading keeps the time and node CPU times of the previous reading,
// the part of a meter's state every meter shares.
type lastReading struct {
	started bool
	time    time.Time
	cpu     CPUTimes
}

// cpuInterval is the node's CPU time over the interval a reading closes.
type cpuInterval struct {
	now      time.Time
	cpu      CPUTimes      // cumulative at now: what the next interval starts from
	interval time.Duration // since the previous reading; 0 on the first
	used     CPUTimes      // CPU time used in the interval
	// reset: the node's CPU times went backwards (CPUs went offline), so
	// the interval's use is unknown and counts as zero.
	reset bool
}

// next reads the node's CPU times at now from proc and checks now against
// the previous reading. It does not advance: a meter advances only once
// its whole reading succeeded.
func (r *lastReading) next(proc ProcFS, now time.Time) (cpuInterval, error) {
	cpu, err := proc.NodeCPU()
	if err != nil {
		return cpuInterval{}, err
	}
	iv := cpuInterval{now: now, cpu: cpu}
	if !r.started {
		return iv, nil
	}
	if now.Before(r.time) {
		return cpuInterval{}, fmt.Errorf("reading at %s is before the previous one at %s", now.Format(time.RFC3339Nano), r.time.Format(time.RFC3339Nano))
	}
	iv.interval, iv.used = now.Sub(r.time), cpu.sub(r.cpu)
	iv.reset = cpu.BusySeconds < r.cpu.BusySeconds || cpu.TotalSeconds < r.cpu.TotalSeconds
	return iv, nil
}

// advance makes iv's end the previous reading.
func (r *lastReading) advance(iv cpuInterval) {
	r.started, r.time, r.cpu = true, iv.now, iv.cpu
}

// power returns the average power of j joules over d, or 0 for an empty
// interval.
func power(j float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return j / d.Seconds()
}
