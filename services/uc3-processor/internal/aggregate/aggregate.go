// Package aggregate is the UC-3 windowed aggregation: a pure, deterministic
// engine with no I/O and no clock. Time is event time only: the caller feeds
// records in consumption order and drains the updated aggregates whenever it
// wants to emit.
//
// Semantics follow Theodolite's Kafka Streams topology: records are re-keyed
// by (hour of day of the event timestamp in a time zone, sensor id), grouped
// into sliding event-time windows of Duration advancing by Advance and
// aligned to the epoch (Kafka Streams' TimeWindows), with no grace period.
// Stream time is the largest event timestamp seen; a window is open while its
// end is after stream time, and a record updates only its open windows. A
// record none of whose windows is open is late and dropped.
package aggregate

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// Theodolite's defaults: aggregation.duration.days=30, aggregation.advance.days=1.
const (
	DefaultDuration = 30 * 24 * time.Hour
	DefaultAdvance  = 24 * time.Hour
)

// MaxWindowsPerRecord bounds Duration/Advance: each record updates that many
// windows and each key holds that many, so it bounds both work and memory.
const MaxWindowsPerRecord = 4096

// Config parameterises an Engine.
type Config struct {
	// Location decides the hour of day of a record; Theodolite uses
	// Europe/Paris. Required.
	Location *time.Location
	// Duration is the window size, Advance the hop between window starts.
	// Both must be whole milliseconds and 0 < Advance <= Duration.
	Duration time.Duration
	Advance  time.Duration
}

// Default returns Theodolite's window sizes; the caller sets Location.
func Default() Config {
	return Config{Duration: DefaultDuration, Advance: DefaultAdvance}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Location == nil {
		errs = append(errs, errors.New("location: must be set"))
	}
	durationErr, advanceErr := ValidateWindows(c.Duration, c.Advance)
	if durationErr != nil {
		errs = append(errs, fmt.Errorf("duration: %w", durationErr))
	}
	if advanceErr != nil {
		errs = append(errs, fmt.Errorf("advance: %w", advanceErr))
	}
	return errors.Join(errs...)
}

// ValidateWindows checks a window size and hop. The errors describe the
// problem without naming a field, so that callers can name their own.
func ValidateWindows(duration, advance time.Duration) (durationErr, advanceErr error) {
	if duration <= 0 || duration%time.Millisecond != 0 {
		durationErr = fmt.Errorf("%v is not a positive whole number of milliseconds", duration)
	}
	if advance <= 0 || advance%time.Millisecond != 0 {
		advanceErr = fmt.Errorf("%v is not a positive whole number of milliseconds", advance)
	}
	if durationErr != nil || advanceErr != nil {
		return durationErr, advanceErr
	}
	if advance > duration {
		return nil, fmt.Errorf("%v is longer than the window duration %v", advance, duration)
	}
	if n := windowsPerRecord(duration.Milliseconds(), advance.Milliseconds()); n > MaxWindowsPerRecord {
		return nil, fmt.Errorf("%v gives %d windows per record, more than %d", advance, n, MaxWindowsPerRecord)
	}
	return nil, nil
}

// windowsPerRecord is how many windows contain one instant.
func windowsPerRecord(size, advance int64) int64 { return (size + advance - 1) / advance }

// Key is what UC-3 aggregates by.
type Key struct {
	// HourOfDay is 0–23 in the engine's Location.
	HourOfDay int
	SensorID  string
}

// Window is a half-open event-time interval [Start, End) in epoch ms.
type Window struct {
	Start, End int64
}

// Stats summarises the valueInW of the records in one window of one key.
type Stats struct {
	Count    int64
	Mean     float64
	Min, Max float64
	// m2 is Welford's running sum of squared deviations from the mean.
	m2 float64
}

// PopulationVariance is the mean squared deviation from the mean (divided by
// Count, not Count-1); zero for an empty window.
func (s Stats) PopulationVariance() float64 {
	if s.Count == 0 {
		return 0
	}
	return s.m2 / float64(s.Count)
}

// add folds x in with Welford's algorithm, which stays accurate where the
// naive sum of squares cancels catastrophically (large, nearly equal values).
func (s *Stats) add(x float64) {
	s.Count++
	if s.Count == 1 {
		s.Mean, s.Min, s.Max, s.m2 = x, x, x, 0
		return
	}
	delta := x - s.Mean
	s.Mean += delta / float64(s.Count)
	s.m2 += delta * (x - s.Mean)
	s.Min = math.Min(s.Min, x)
	s.Max = math.Max(s.Max, x)
}

// Update is the state of one (key, window) changed since the last Drain.
type Update struct {
	Key    Key
	Window Window
	Stats  Stats
}

// Outcome says what Add did with a record.
type Outcome uint8

const (
	// Accepted: the record updated at least one open window.
	Accepted Outcome = iota
	// Late: every window of the record had closed; it was dropped.
	Late
	// Invalid: the timestamp is negative (Kafka Streams rejects those) or
	// so large that its window end overflows; the record was dropped.
	Invalid
)

// String implements fmt.Stringer.
func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Late:
		return "late"
	case Invalid:
		return "invalid"
	default:
		return fmt.Sprintf("outcome(%d)", uint8(o))
	}
}

// Engine aggregates records into windows. It is not safe for concurrent use.
//
// Memory is bounded: a key holds at most Duration/Advance windows, closed
// windows are evicted, and a key whose windows have all closed is forgotten.
// A closed window updated since the last Drain is kept until that Drain.
type Engine struct {
	loc     *time.Location
	size    int64 // window size, ms
	advance int64 // hop, ms
	slots   int64 // windows per key = windows per record

	series     map[Key]*series
	dirty      []slotRef // windows updated since the last Drain
	closed     []Update  // such windows evicted before that Drain
	streamTime int64
	nextSweep  int64
	windows    int
}

// series holds the windows of one key in a ring: the window starting at s
// lives in slot (s/advance) mod slots. Two windows sharing a slot are at
// least Duration apart, so the older one has closed by the time the newer one
// is written. Slots are stored inline, so the garbage collector sees one
// object per key rather than one per window.
type series struct {
	key  Key
	ring []slot
	live int
}

type slot struct {
	start int64 // -1 when empty
	stats Stats
	dirty bool
}

type slotRef struct {
	s   *series
	idx int
}

// New returns an empty engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configure aggregation: %w", err)
	}
	size, advance := cfg.Duration.Milliseconds(), cfg.Advance.Milliseconds()
	return &Engine{
		loc:        cfg.Location,
		size:       size,
		advance:    advance,
		slots:      windowsPerRecord(size, advance),
		series:     make(map[Key]*series),
		streamTime: -1,
	}, nil
}

// HourOfDay returns the hour of the day of an epoch-ms timestamp in loc, as
// UC-3 keys records. Across a DST change an hour may be missing or doubled.
func HourOfDay(ts int64, loc *time.Location) int {
	return time.UnixMilli(ts).In(loc).Hour()
}

// Add folds r into every open window that contains its timestamp.
func (e *Engine) Add(r uc3.ActivePowerRecord) Outcome {
	ts := r.Timestamp
	if ts < 0 || ts > math.MaxInt64-e.size {
		return Invalid
	}
	if ts > e.streamTime {
		e.streamTime = ts
	}
	// Windows containing ts start in (ts-size, ts]; open ones start after
	// streamTime-size. As streamTime >= ts, the second bound rules.
	lo := max(0, e.streamTime-e.size+e.advance) / e.advance * e.advance
	hi := ts / e.advance * e.advance
	if lo > hi {
		return Late
	}

	key := Key{HourOfDay: HourOfDay(ts, e.loc), SensorID: r.Identifier}
	s := e.series[key]
	if s == nil {
		s = &series{key: key, ring: make([]slot, e.slots)}
		for i := range s.ring {
			s.ring[i].start = -1
		}
		e.series[key] = s
	}
	for start := lo; start <= hi; start += e.advance {
		idx := int(start / e.advance % e.slots)
		w := &s.ring[idx]
		if w.start != start {
			if w.start < 0 {
				s.live++
				e.windows++
			} else {
				e.evict(s, idx)
			}
			*w = slot{start: start}
		}
		w.stats.add(r.ValueInW)
		if !w.dirty {
			w.dirty = true
			e.dirty = append(e.dirty, slotRef{s: s, idx: idx})
		}
	}
	if e.streamTime >= e.nextSweep {
		e.sweep()
	}
	return Accepted
}

// evict hands a closed window that is about to be overwritten or dropped to
// the next Drain if it has unemitted updates. Its dirty reference stays in
// e.dirty and is skipped there because the slot's flag is cleared.
func (e *Engine) evict(s *series, idx int) {
	w := &s.ring[idx]
	if w.dirty {
		e.closed = append(e.closed, e.update(s, w))
		w.dirty = false
	}
}

func (e *Engine) update(s *series, w *slot) Update {
	return Update{Key: s.key, Window: Window{Start: w.start, End: w.start + e.size}, Stats: w.stats}
}

// sweep evicts closed windows and forgets keys with none open. It runs once
// per Advance of stream time, so its cost is spread thinly.
func (e *Engine) sweep() {
	for k, s := range e.series {
		for i := range s.ring {
			if w := &s.ring[i]; w.start >= 0 && w.start+e.size <= e.streamTime {
				e.evict(s, i)
				*w = slot{start: -1}
				s.live--
				e.windows--
			}
		}
		if s.live == 0 {
			delete(e.series, k)
		}
	}
	e.nextSweep = e.streamTime - e.streamTime%e.advance + e.advance
}

// Drain appends to dst every (key, window) updated since the previous Drain,
// once, with its current statistics, and returns the extended slice. The
// order is deterministic for a given input: windows evicted since the last
// Drain first, then the others in the order they were first updated.
func (e *Engine) Drain(dst []Update) []Update {
	dst = append(dst, e.closed...)
	clear(e.closed)
	e.closed = e.closed[:0]
	for _, ref := range e.dirty {
		if w := &ref.s.ring[ref.idx]; w.dirty {
			dst = append(dst, e.update(ref.s, w))
			w.dirty = false
		}
	}
	clear(e.dirty) // drop references so forgotten keys can be collected
	e.dirty = e.dirty[:0]
	return dst
}

// Pending is an upper bound on the number of updates the next Drain returns.
func (e *Engine) Pending() int { return len(e.closed) + len(e.dirty) }

// StreamTime is the largest valid event timestamp seen, or -1.
func (e *Engine) StreamTime() int64 { return e.streamTime }

// Keys is the number of keys held.
func (e *Engine) Keys() int { return len(e.series) }

// Windows is the number of windows held, open or awaiting eviction.
func (e *Engine) Windows() int { return e.windows }
