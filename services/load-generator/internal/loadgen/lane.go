package loadgen

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"
	"time"
)

// lane produces some ranges of a load from one point of the schedule on,
// and keeps count, per slot of schedule time, of the records it produced and
// those Kafka acknowledged: from these the acked watermark follows — the
// schedule time before which every record of the lane is in Kafka. That is
// what a restarted instance, or the heir of a dead one, resumes from: it
// never misses a record, and re-produces at most what was produced after
// the last checkpoint.
type lane struct {
	ranges []Range
	p      *Pacer
	rctx   context.Context // records' context; carries the lane to the promise
	// from is where production started (records before it were produced
	// by someone else, or counted missed); lateUntil is the schedule time
	// when the lane was created: its records due before it are back-filled.
	from, lateUntil time.Duration

	next    int64        // next record of p to produce; loop goroutine only
	due     int64        // records of p due at the last step; loop goroutine only
	nextPub atomic.Int64 // next, published for checkpoints

	slot     time.Duration
	produced []atomic.Int64 // per slot
	acked    []atomic.Int64 // per slot
	cursor   int            // first slot not known to be complete; under worker.lanesMu
	// parent is the lane this one continues (with fewer ranges) until
	// every record the parent produced before from is acknowledged.
	parent *lane
}

// slotWidth sizes the acknowledgement slots: fine enough that a successor
// re-produces little, coarse enough that a long load keeps the counters
// small (at most ~50,000 slots per lane). A whole number of milliseconds, as
// Kafka keeps record timestamps.
func slotWidth(d time.Duration) time.Duration {
	return max(10*time.Millisecond, (d/50_000 + time.Millisecond - 1).Truncate(time.Millisecond))
}

// newLane starts producing ranges from schedule time from, or — when from
// is more than MaxBackfill before elapsed — from there, counting the records
// skipped as missed; those before produced (the previous owner produced
// them) are skipped without being counted.
func (w *worker) newLane(ctx context.Context, ranges []Range, from, elapsed, produced time.Duration) *lane {
	p := NewPacer(ranges, w.sched.sensors, w.sched.period, w.sched.seed)
	cut := max(from, elapsed-w.cfg.MaxBackfill)
	n := int(w.sched.duration/w.slot) + 2
	l := &lane{ranges: slices.Clone(ranges), p: p, from: cut, lateUntil: max(0, elapsed), slot: w.slot,
		produced: make([]atomic.Int64, n), acked: make([]atomic.Int64, n)}
	l.rctx = context.WithValue(ctx, laneKey{}, l)
	l.next = p.Due(cut)
	l.due = l.next
	l.nextPub.Store(l.next)
	if skipped := l.next - p.Due(max(from, produced)); skipped > 0 {
		w.skipped.Add(skipped)
	}
	return l
}

func (l *lane) slotOf(at time.Duration) int {
	return min(max(0, int(at/l.slot)), len(l.produced)-1)
}

// position is the schedule time up to which the lane has produced: where a
// lane continuing it would start.
func (l *lane) position(edge time.Duration) time.Duration {
	if l.next < l.due {
		return l.p.DueAt(l.next)
	}
	return max(edge, l.from)
}

// producedTo is the schedule time before which every record of the lane was
// produced (as published by the loop).
func (l *lane) producedTo() time.Duration {
	if l.p.Sensors() == 0 {
		return l.from
	}
	return max(l.from, l.p.DueAt(l.nextPub.Load()))
}

// watermark is the schedule time before which every record of the lane is
// acknowledged. Callers hold worker.lanesMu (it advances the cursor).
func (l *lane) watermark() time.Duration {
	edge := l.producedTo()
	w := edge
	c := l.cursor
	for ; c < len(l.produced); c++ {
		start := time.Duration(c) * l.slot
		if start >= edge {
			break
		}
		if l.acked[c].Load() != l.produced[c].Load() {
			w = start
			break
		}
		if start+l.slot > edge {
			break // partly produced, all of that acknowledged
		}
	}
	l.cursor = c
	w = max(w, l.from)
	if l.parent != nil {
		if pw := l.parent.watermark(); pw < l.from {
			w = min(w, pw)
		} else {
			l.parent = nil
		}
	}
	return w
}

// intersect returns the parts of a that are also in b.
func intersect(a, b []Range) []Range {
	var out []Range
	for _, x := range a {
		for _, y := range b {
			if lo, hi := max(x.Lo, y.Lo), min(x.Hi, y.Hi); lo < hi {
				out = append(out, Range{lo, hi})
			}
		}
	}
	return normalize(out)
}

// subtract returns the parts of a not in b.
func subtract(a, b []Range) []Range {
	out := normalize(slices.Clone(a))
	for _, y := range b {
		var next []Range
		for _, x := range out {
			if y.Hi <= x.Lo || y.Lo >= x.Hi {
				next = append(next, x)
				continue
			}
			if x.Lo < y.Lo {
				next = append(next, Range{x.Lo, y.Lo})
			}
			if y.Hi < x.Hi {
				next = append(next, Range{y.Hi, x.Hi})
			}
		}
		out = next
	}
	return out
}

// normalize sorts ranges, drops empty ones and merges touching ones.
func normalize(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Lo, b.Lo) })
	out := rs[:0]
	for _, r := range rs {
		if r.Len() == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Hi >= r.Lo {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}
