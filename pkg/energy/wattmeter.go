package energy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"k8s.io/utils/clock"
)

// SourceWattmeter: a node's power measured outside it, at the wall (a
// wattmeter on its power supply, e.g. Grid'5000's Omegawatt meters read
// through Kwollect), or by its BMC as the fallback. It sees the whole node
// — fans, disks, power-supply losses — where RAPL sees CPU packages and
// DRAM only, so it is the reference the software meters are compared with.
const SourceWattmeter = "wattmeter"

// Zones of a wattmeter reading.
const (
	ZoneWall = "wall" // a wattmeter between the node and the grid
	ZoneBMC  = "bmc"  // the node's own BMC power reading
)

// PowerSample is one power value of a meter.
type PowerSample struct {
	Time  time.Time
	Watts float64
}

// PowerSamples is a stretch of one meter's series.
type PowerSamples struct {
	Samples []PowerSample // by time
	// Period is the meter's sampling period (wattmetre_power_watt: 1 s;
	// bmc_node_power_watt: about 5 s).
	Period time.Duration
	// Averaged: each value is the mean power over the Period before its
	// time (a wattmeter's 1 Hz values average its 50 Hz readings), so it
	// carries the energy value × Period, like a counter's delta. Otherwise
	// values are instantaneous (a BMC's) and integrate by the trapezoid
	// rule.
	Averaged bool
	Zone     string // ZoneWall or ZoneBMC
}

// PowerSeries gives one node's power samples with times in [from, to]. It
// may have none yet for the end of that stretch: external meter APIs
// (Kwollect) publish late.
type PowerSeries interface {
	Power(ctx context.Context, from, to time.Time) (PowerSamples, error)
}

// PowerIntegral is the energy of a power series over a window, with what
// the integration had to do (the analyzer's integration and gap policy).
type PowerIntegral struct {
	Joules float64 // including BridgedJ
	// Gaps: consecutive samples further apart than twice the period; their
	// uncovered stretch is bridged with the mean of the two samples' powers
	// (the trapezoid rule), counted in BridgedJ and GapS.
	Gaps              int
	GapS, MaxGapS     float64
	BridgedJ          float64
	UncoveredS        float64 // window time before the first or after the last sample: not extrapolated
	Samples           int
	Implausible       []Implausible // values out of [0, bound]: left out, as a gap
	FirstTime, LastAt time.Time
}

// IntegratePower integrates samples over [start, end] with the analyzer's
// policy (see the analyzer package's "Integration and gap policy"):
// averaged values as per-period energies, a sample straddling a window
// edge counting in proportion to its overlap; instantaneous ones by the
// trapezoid rule, interpolated at the edges; gaps longer than twice the
// period bridged by the trapezoid rule and reported; nothing extrapolated
// beyond the first or last sample. Values below 0 or above boundW are
// left out and reported.
func IntegratePower(ps PowerSamples, start, end time.Time, boundW float64) PowerIntegral {
	var out PowerIntegral
	if boundW <= 0 {
		boundW = DefaultMaxPowerW
	}
	period := ps.Period
	if period <= 0 {
		period = time.Second
	}
	samples := make([]PowerSample, 0, len(ps.Samples))
	for _, s := range ps.Samples {
		if s.Watts < 0 || s.Watts > boundW || math.IsNaN(s.Watts) {
			out.Implausible = append(out.Implausible, Implausible{Zone: ps.Zone, DeltaJ: s.Watts * period.Seconds(), PowerW: s.Watts, BoundW: boundW})
			continue
		}
		samples = append(samples, s)
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].Time.Before(samples[j].Time) })
	win := end.Sub(start).Seconds()
	if len(samples) == 0 || win <= 0 {
		out.UncoveredS = max(0, win)
		return out
	}
	// overlap is the seconds [a, b] shares with the window.
	overlap := func(a, b time.Time) float64 {
		if a.Before(start) {
			a = start
		}
		if b.After(end) {
			b = end
		}
		return max(0, b.Sub(a).Seconds())
	}
	covered := 0.0
	for i, s := range samples {
		if !s.Time.Before(start) && !s.Time.After(end) {
			out.Samples++
		}
		if ps.Averaged {
			// A value covers the period before it, but never what the one
			// before it covers (repeated or closer samples are not more
			// energy).
			from := s.Time.Add(-period)
			if i > 0 && from.Before(samples[i-1].Time) {
				from = samples[i-1].Time
			}
			o := overlap(from, s.Time)
			out.Joules += s.Watts * o
			covered += o
		}
		if i == 0 {
			continue
		}
		prev := samples[i-1]
		d := s.Time.Sub(prev.Time)
		gap := d > 2*period
		if !ps.Averaged || gap {
			// The stretch the trapezoid covers: the whole segment for
			// instantaneous values, the part no averaged value covers for
			// a gap (prev.Time, s.Time − period].
			a, b := prev.Time, s.Time
			if ps.Averaged {
				b = s.Time.Add(-period)
			}
			seg := overlap(a, b)
			if seg > 0 {
				// Linear between the two samples, integrated over the part in
				// the window.
				lerp := func(t time.Time) float64 {
					f := t.Sub(prev.Time).Seconds() / d.Seconds()
					return prev.Watts + f*(s.Watts-prev.Watts)
				}
				ca, cb := maxTime(a, start), minTime(b, end)
				j := (lerp(ca) + lerp(cb)) / 2 * seg
				out.Joules += j
				covered += seg
				if gap {
					out.Gaps++
					out.GapS += seg
					out.MaxGapS = max(out.MaxGapS, seg)
					out.BridgedJ += j
				}
			}
		}
	}
	out.FirstTime, out.LastAt = samples[0].Time, samples[len(samples)-1].Time
	out.UncoveredS = max(0, win-covered)
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// WattmeterOptions configures a WattmeterSource.
type WattmeterOptions struct {
	Series PowerSeries
	// MaxLag bounds how long a Read waits for the series to reach its
	// time (Kwollect publishes tens of seconds late); then the Read fails
	// and the next one covers the whole stretch. Default 2 minutes.
	MaxLag time.Duration
	Poll   time.Duration // how often a waiting Read asks again; default 2 s
	// MaxUncovered is the window time a Read may leave without samples
	// (before the first, after the last) and still succeed. Default 1 s,
	// the analyzer's MaxUncovered.
	MaxUncovered time.Duration
	MaxPowerW    float64 // plausibility bound; 0: DefaultMaxPowerW
	Clock        clock.WithTicker
	// Delay makes Read(now) measure up to now − Delay, and stamps the
	// reading so: a collector that reads every meter at its tick can read
	// one whose API lags (Kwollect: tens of seconds) without waiting. Set
	// it above the API's usual lag; 0 reads up to now.
	Delay time.Duration
}

// WattmeterSource reads a node's power from an external meter and turns
// it into energy per interval. It sees no workloads (BasisNone): the whole
// node is unattributed, to be compared with what the software meters
// attribute.
//
// Read(now) measures (previous reading, now]; it waits, bounded by MaxLag
// and ctx, until the series has a sample at or after now, because the
// meter's API lags behind real time. Readings therefore complete about one
// API lag after their time: a collector should read a wattmeter on its
// own schedule, not the local meters' tick.
type WattmeterSource struct {
	opts    WattmeterOptions
	started bool
	last    time.Time
	// LastIntegral is the last reading's integration: the gaps it bridged
	// (measured by the trapezoid rule, so not Resets) — NodeReading has no
	// field for them yet.
	LastIntegral PowerIntegral
}

// NewWattmeterSource does no I/O.
func NewWattmeterSource(o WattmeterOptions) (*WattmeterSource, error) {
	if o.Series == nil {
		return nil, errors.New("wattmeter source: a power series is required")
	}
	if o.MaxLag <= 0 {
		o.MaxLag = 2 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.MaxUncovered <= 0 {
		o.MaxUncovered = time.Second
	}
	if o.MaxPowerW <= 0 {
		o.MaxPowerW = DefaultMaxPowerW
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &WattmeterSource{opts: o}, nil
}

var (
	_ Source       = (*WattmeterSource)(nil)
	_ Checkpointer = (*WattmeterSource)(nil)
)

// ErrNotCovered: the meter's series does not reach a reading's time yet.
var ErrNotCovered = errors.New("meter's series does not cover the interval yet")

// Read implements Source. With a Delay, the reading ends — and is stamped
// — Delay before now.
func (w *WattmeterSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	now = now.Add(-w.opts.Delay)
	if err := ctx.Err(); err != nil {
		return Measurement{}, fmt.Errorf("wattmeter source: %w", err)
	}
	if !w.started {
		w.started, w.last = true, now
		return Measurement{NodeReading: NodeReading{Time: now, Source: SourceWattmeter}}, nil
	}
	if now.Before(w.last) {
		return Measurement{}, fmt.Errorf("wattmeter source: reading at %s is before the previous one at %s", now.Format(time.RFC3339Nano), w.last.Format(time.RFC3339Nano))
	}
	ps, err := w.covered(ctx, now)
	if err != nil {
		return Measurement{}, err
	}
	in := IntegratePower(ps, w.last, now, w.opts.MaxPowerW)
	if in.UncoveredS > w.opts.MaxUncovered.Seconds() {
		return Measurement{}, fmt.Errorf("wattmeter source: %.1f s of (%s, %s] without %s samples (first %s, last %s), more than the %s allowed",
			in.UncoveredS, w.last.Format(time.RFC3339), now.Format(time.RFC3339), ps.Zone, in.FirstTime.Format(time.RFC3339), in.LastAt.Format(time.RFC3339), w.opts.MaxUncovered)
	}
	interval := now.Sub(w.last)
	m := Measurement{NodeReading: NodeReading{Time: now, Interval: interval, Source: SourceWattmeter,
		TotalDeltaJ: in.Joules, TotalPowerW: power(in.Joules, interval), Implausible: in.Implausible,
		Zones: []ZoneEnergy{{Zone: ps.Zone, DeltaJ: in.Joules, PowerW: power(in.Joules, interval)}}}}
	w.last, w.LastIntegral = now, in
	return m, nil
}

// covered fetches (last − period, now + period] and waits, bounded, until
// it reaches now.
func (w *WattmeterSource) covered(ctx context.Context, now time.Time) (PowerSamples, error) {
	deadline := w.opts.Clock.Now().Add(w.opts.MaxLag)
	for {
		// A margin of a few periods each side: the averaged sample ending
		// just after the window edge, and the neighbours a gap is bridged
		// between.
		ps, err := w.opts.Series.Power(ctx, w.last.Add(-10*time.Second), now.Add(10*time.Second))
		if err != nil {
			return PowerSamples{}, fmt.Errorf("wattmeter source: %w", err)
		}
		n := len(ps.Samples)
		if n > 0 && !ps.Samples[n-1].Time.Before(now) {
			return ps, nil
		}
		reached := "nothing"
		if n > 0 {
			reached = ps.Samples[n-1].Time.Format(time.RFC3339)
		}
		if !w.opts.Clock.Now().Before(deadline) {
			return PowerSamples{}, fmt.Errorf("wattmeter source: %w: reading at %s, samples up to %s after waiting %s", ErrNotCovered, now.Format(time.RFC3339), reached, w.opts.MaxLag)
		}
		t := w.opts.Clock.NewTimer(w.opts.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return PowerSamples{}, fmt.Errorf("wattmeter source: waiting for samples up to %s (have %s): %w", now.Format(time.RFC3339), reached, ctx.Err())
		case <-t.C():
		}
	}
}

type wattmeterCheckpoint struct {
	V    int       `json:"v"`
	Last time.Time `json:"last"`
}

// Checkpoint implements Checkpointer: the time of the last reading is all
// the state (the meter's series is kept by its API).
func (w *WattmeterSource) Checkpoint(func(string) bool) ([]byte, error) {
	if !w.started {
		return nil, errors.New("wattmeter source: no reading yet to checkpoint")
	}
	return json.Marshal(wattmeterCheckpoint{V: 1, Last: w.last})
}

// Restore implements Checkpointer.
func (w *WattmeterSource) Restore(data []byte) error {
	var c wattmeterCheckpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("wattmeter source: restore checkpoint: %w", err)
	}
	if c.V != 1 || c.Last.IsZero() {
		return fmt.Errorf("wattmeter source: restore checkpoint: version %d, last reading %s: expected version 1 with a reading", c.V, c.Last)
	}
	w.started, w.last = true, c.Last
	return nil
}

// MeasureWindow is a node's energy at its meter over a window [start,
// end] — a run's measured window — once the meter's API has published it:
// a baseline at start and one reading at end, which waits, bounded by
// o.MaxLag, for the data. The integral says what was bridged or
// uncovered; more than o.MaxUncovered uncovered fails.
func MeasureWindow(ctx context.Context, o WattmeterOptions, start, end time.Time) (PowerIntegral, error) {
	w, err := NewWattmeterSource(o)
	if err != nil {
		return PowerIntegral{}, err
	}
	if _, err := w.Read(ctx, start); err != nil {
		return PowerIntegral{}, err
	}
	if _, err := w.Read(ctx, end); err != nil {
		return PowerIntegral{}, err
	}
	return w.LastIntegral, nil
}
