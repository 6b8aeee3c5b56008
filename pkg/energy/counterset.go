package energy

import (
	"math"
	"time"
)

// CounterStatus says what became of one counter sample.
type CounterStatus int

const (
	// CounterOK: the delta is valid.
	CounterOK CounterStatus = iota
	// CounterBaseline: first sample of the series; no delta yet.
	CounterBaseline
	// CounterReset: the counter went backwards (exporter restart, a raw
	// hardware counter wrapping at an unknown range) or jumped further than
	// the caller's plausibility bound. The sample becomes the new baseline.
	CounterReset
	// CounterInvalid: NaN, infinite or negative; the series is dropped and
	// its next valid sample is a baseline.
	CounterInvalid
	// CounterImplausible: the counter grew by more than the plausibility
	// bound (MaxPlausibleJ) allows; like a reset, the sample becomes the new
	// baseline and no delta is counted.
	CounterImplausible
)

// IsReset reports whether the sample re-based its series after a decrease
// or an implausible jump: the interval is not measured by this counter.
func (s CounterStatus) IsReset() bool { return s == CounterReset || s == CounterImplausible }

// CounterSet turns samples of many cumulative counters — an exporter's
// *_joules_total or µJ series, keyed by whatever identifies a series — into
// per-interval deltas, with Counter's policy: a decrease is never a negative
// delta, and a jump no plausible power could explain is never a spike; both
// only re-baseline the series.
//
// Observations are staged and take effect on Commit, so a reading that fails
// half-way (malformed exposition, timeout) leaves the set as it was. A
// series not observed before Commit is forgotten. Not safe for concurrent
// use; the zero value is ready.
type CounterSet struct {
	prev map[string]float64
	next map[string]float64
}

// Observe stages the raw value v of series key and returns its delta since
// the committed previous value. maxDelta > 0 bounds a plausible delta
// (MaxPlausibleJ); a larger one is reported as CounterImplausible.
func (c *CounterSet) Observe(key string, v, maxDelta float64) (float64, CounterStatus) {
	if c.next == nil {
		c.next = make(map[string]float64, len(c.prev))
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, CounterInvalid
	}
	c.next[key] = v
	prev, ok := c.prev[key]
	switch {
	case !ok:
		return 0, CounterBaseline
	case v < prev:
		return 0, CounterReset
	case maxDelta > 0 && v-prev > maxDelta:
		return 0, CounterImplausible
	}
	return v - prev, CounterOK
}

// ObserveBounded is Observe with the plausibility rule of every energy
// path: the series' increase over interval may imply at most boundW
// (MaxPlausibleJ); an implausible one is described for the reading's flag.
// zone names the series there; v is in joules.
func (c *CounterSet) ObserveBounded(key, zone string, v float64, interval time.Duration, boundW float64) (float64, CounterStatus, *Implausible) {
	var maxDelta float64
	if interval > 0 {
		maxDelta = MaxPlausibleJ(boundW, interval)
	}
	prev, had := c.prev[key]
	d, st := c.Observe(key, v, maxDelta)
	if st == CounterImplausible && had {
		imp := implausible(zone, v-prev, interval, boundW)
		return 0, st, &imp
	}
	return d, st, nil
}

// observe is cs.ObserveBounded for a source's reading m: a reset is counted
// in m.Resets and an implausible jump listed in m.Implausible.
func (m *Measurement) observe(cs *CounterSet, key, zone string, v float64, interval time.Duration, boundW float64) (float64, CounterStatus) {
	d, st, imp := cs.ObserveBounded(key, zone, v, interval, boundW)
	if st.IsReset() {
		m.Resets++
	}
	if imp != nil {
		m.Implausible = append(m.Implausible, *imp)
	}
	return d, st
}

// Commit makes the staged observations the new previous values.
func (c *CounterSet) Commit() {
	if c.next == nil {
		c.next = make(map[string]float64)
	}
	c.prev, c.next = c.next, nil
}

// Discard drops the staged observations.
func (c *CounterSet) Discard() { c.next = nil }

// Reset forgets every series, so each next sample is a baseline.
func (c *CounterSet) Reset() { c.prev, c.next = nil, nil }

// snapshot copies the committed values whose keys pass keep (nil keeps all).
func (c *CounterSet) snapshot(keep func(string) bool) map[string]float64 {
	out := make(map[string]float64, len(c.prev))
	for k, v := range c.prev {
		if keep == nil || keep(k) {
			out[k] = v
		}
	}
	return out
}

// restore replaces the committed values, dropping invalid ones.
func (c *CounterSet) restore(m map[string]float64) {
	c.prev, c.next = make(map[string]float64, len(m)), nil
	for k, v := range m {
		if !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 {
			c.prev[k] = v
		}
	}
}
