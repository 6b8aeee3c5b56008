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

// clock keeps the time and node CPU times of the previous reading, the part
// of a meter's state every meter shares.
type clock struct {
	started bool
	time    time.Time
	cpu     CPUTimes
}

// interval checks now against the previous reading and returns the elapsed
// time and the CPU time delta up to cpu. It does not advance the clock.
func (c *clock) interval(now time.Time, cpu CPUTimes) (time.Duration, CPUTimes, error) {
	if !c.started {
		return 0, CPUTimes{}, nil
	}
	if now.Before(c.time) {
		return 0, CPUTimes{}, fmt.Errorf("reading at %s is before the previous one at %s", now.Format(time.RFC3339Nano), c.time.Format(time.RFC3339Nano))
	}
	return now.Sub(c.time), cpu.sub(c.cpu), nil
}

func (c *clock) advance(now time.Time, cpu CPUTimes) {
	c.started, c.time, c.cpu = true, now, cpu
}

// power returns the average power of j joules over d, or 0 for an empty
// interval.
func power(j float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return j / d.Seconds()
}
