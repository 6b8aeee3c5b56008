package chaos

import "sort"

// Sample is one row of a sample series as the coverage check needs it: the
// row covers (TsMs - IntervalMs, TsMs].
type Sample struct {
	TsMs       int64   `json:"ts_ms"`
	IntervalMs int64   `json:"interval_ms"`
	DeltaJ     float64 `json:"delta_j"`
}

// Hole is a stretch of a window no sample of a series covers.
type Hole struct {
	StartMs int64 `json:"start_ms"`
	EndMs   int64 `json:"end_ms"`
}

// Len is the hole's length in ms.
func (h Hole) Len() int64 { return h.EndMs - h.StartMs }

// SeriesCoverage says how well one series covers a window.
type SeriesCoverage struct {
	Samples     int    `json:"samples"`      // rows overlapping the window
	UncoveredMs int64  `json:"uncovered_ms"` // window time covered by no row
	MaxHoleMs   int64  `json:"max_hole_ms"`
	Holes       []Hole `json:"holes,omitempty"` // holes longer than minHole
}

// Cover computes the coverage of [startMs, endMs) by samples (any order).
// Holes up to minHoleMs are timestamp jitter and are left out of Holes but
// counted in UncoveredMs and MaxHoleMs.
func Cover(samples []Sample, startMs, endMs, minHoleMs int64) SeriesCoverage {
	var c SeriesCoverage
	if endMs <= startMs {
		return c
	}
	s := append([]Sample(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i].TsMs < s[j].TsMs })
	cursor := startMs // everything before cursor is covered or counted
	addHole := func(a, b int64) {
		if b <= a {
			return
		}
		h := Hole{a, b}
		c.UncoveredMs += h.Len()
		c.MaxHoleMs = max(c.MaxHoleMs, h.Len())
		if h.Len() > minHoleMs {
			c.Holes = append(c.Holes, h)
		}
	}
	for _, r := range s {
		from, to := r.TsMs-r.IntervalMs, r.TsMs
		if to <= startMs || from >= endMs {
			continue
		}
		c.Samples++
		from, to = max(from, startMs), min(to, endMs)
		if from > cursor {
			addHole(cursor, from)
		}
		cursor = max(cursor, to)
	}
	addHole(cursor, endMs)
	return c
}

// EnergyIn sums the samples' energy in [startMs, endMs), a row straddling an
// edge counting in proportion to its overlap (as the analyzer does).
func EnergyIn(samples []Sample, startMs, endMs int64) float64 {
	var j float64
	for _, r := range samples {
		from, to := r.TsMs-r.IntervalMs, r.TsMs
		if r.IntervalMs <= 0 {
			if to >= startMs && to < endMs {
				j += r.DeltaJ
			}
			continue
		}
		ov := min(to, endMs) - max(from, startMs)
		if ov > 0 {
			j += r.DeltaJ * float64(ov) / float64(r.IntervalMs)
		}
	}
	return j
}

// MaxGap is the longest stretch of [startMs, endMs) without any of the
// sorted-or-not timestamps (ms), edges included.
func MaxGap(ts []int64, startMs, endMs int64) int64 {
	if endMs <= startMs {
		return 0
	}
	s := append([]int64(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	prev, gap := startMs, int64(0)
	for _, t := range s {
		if t < startMs || t >= endMs {
			continue
		}
		gap = max(gap, t-prev)
		prev = t
	}
	return max(gap, endMs-prev)
}
