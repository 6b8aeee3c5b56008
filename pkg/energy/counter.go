package energy

// Counter turns successive samples of a cumulative, wrapping hardware energy
// counter (µJ, as in powercap's energy_uj) into per-interval joules.
//
// The zero value is ready to use. A Counter is not safe for concurrent use.
type Counter struct {
	prev    uint64
	started bool
	totalJ  float64
	resets  int
}

// Update records the raw counter value rawUJ and returns the energy spent
// since the previous update, in joules. maxRangeUJ is the value at which the
// counter wraps to zero (powercap's max_energy_range_uj); 0 means unknown.
//
// ok is false when no delta could be measured: on the first update, which
// only establishes the baseline, and when the sample looks like a counter
// reset rather than a wrap. In both cases deltaJ is 0 and rawUJ becomes the
// new baseline. Update never returns a negative delta.
//
// A decrease is taken as a wrap only when it is plausible: the range is
// known, both samples lie inside it, and the energy implied,
// (max − prev) + cur, is at most half the range. Callers must sample well
// within one wrap period (minutes at high power), so a "wrap" implying more
// than half a period went unobserved is far more likely a reset (driver
// reload, CPU hot-plug, suspend). Dropping one interval undercounts
// slightly; accepting it would add a spike of up to the whole range.
func (c *Counter) Update(rawUJ, maxRangeUJ uint64) (deltaJ float64, ok bool) {
	if !c.started {
		c.prev, c.started = rawUJ, true
		return 0, false
	}
	prev := c.prev
	c.prev = rawUJ

	var deltaUJ uint64
	switch {
	case rawUJ >= prev:
		deltaUJ = rawUJ - prev
	case maxRangeUJ == 0, prev > maxRangeUJ, rawUJ > maxRangeUJ:
		c.resets++
		return 0, false
	default:
		deltaUJ = (maxRangeUJ - prev) + rawUJ
		if deltaUJ > maxRangeUJ/2 {
			c.resets++
			return 0, false
		}
	}
	deltaJ = float64(deltaUJ) / 1e6
	c.totalJ += deltaJ
	return deltaJ, true
}

// UpdateBounded is Update with the plausibility rule of every energy path
// (MaxPlausibleJ): a delta above maxDeltaJ (> 0) is not energy but a reset —
// it adds nothing, counts in Resets, rawUJ becomes the baseline — and is
// returned as jumpJ for the caller's flag.
func (c *Counter) UpdateBounded(rawUJ, maxRangeUJ uint64, maxDeltaJ float64) (deltaJ float64, ok bool, jumpJ float64) {
	deltaJ, ok = c.Update(rawUJ, maxRangeUJ)
	if ok && maxDeltaJ > 0 && deltaJ > maxDeltaJ {
		c.totalJ -= deltaJ
		c.resets++
		return 0, false, deltaJ
	}
	return deltaJ, ok, 0
}

// TotalJ is the energy accumulated over all accepted deltas since the first
// update: monotonic, with wraps resolved and resets contributing nothing.
func (c *Counter) TotalJ() float64 { return c.totalJ }

// Resets counts the decreases that were treated as counter resets.
func (c *Counter) Resets() int { return c.resets }
