package analyzer

import (
	"math"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/store"
)

// seriesEnergy is one sample series' energy within a window, with the data
// quality of that stretch.
type seriesEnergy struct {
	Scope, Target, Node, Zone string
	// Joules includes BridgedJ; it is all the energy the window gets.
	Joules    float64
	PeakW     float64
	Samples   uint64
	Estimated bool
	PowerOnly bool // integrated by the trapezoid rule
	Sources   []string

	Gaps       uint64
	GapMs      float64
	MaxGapMs   float64 // the longest single gap
	IntervalMs int64   // the longest sampling interval
	// The series' usual interval, its stretched samples and the window
	// time measured twice (store.SeriesWindow).
	MedianIntervalMs        int64
	Stretches               uint64
	StretchMs, MaxStretchMs float64
	OverlapMs               float64
	Collectors              []string
	BridgedJ                float64
	UncoveredMs             float64
	Resets                  uint64
}

// seriesOf applies the integration and gap policy (see the package
// comment) to the series' figures over the window [startMs, endMs]: a
// counter series gets its deltas plus its bridged gaps, a gauge its
// trapezoid integral. Series with samples only outside the window
// (neighbours) are left out, except those of keep's targets, whose absence
// from the window matters.
func seriesOf(raw []store.SeriesWindow, startMs, endMs int64, keep map[string]string) []seriesEnergy {
	var out []seriesEnergy
	durMs := float64(endMs - startMs)
	for _, r := range raw {
		s := seriesEnergy{Scope: r.Scope, Target: r.TargetID, Node: r.Node, Zone: r.Zone, PeakW: r.PeakW, Samples: r.Samples, Estimated: r.Estimated,
			PowerOnly: r.PowerOnly, Sources: r.Sources, Gaps: r.Gaps, GapMs: r.GapMs, MaxGapMs: r.MaxGapMs, IntervalMs: r.MaxIntervalMs,
			Resets: r.Resets, MedianIntervalMs: r.MedianIntervalMs, Stretches: r.Stretches, StretchMs: r.StretchMs, MaxStretchMs: r.MaxStretchMs,
			OverlapMs: r.OverlapMs, Collectors: r.Collectors}
		if s.PowerOnly {
			s.Joules, s.BridgedJ = r.TrapzJ, r.TrapzBridgedJ
			s.UncoveredMs = max(0, durMs-r.GaugeSpanMs)
		} else {
			s.Joules, s.BridgedJ = r.CounterJ+r.CounterBridgedJ, r.CounterBridgedJ
			s.UncoveredMs = max(0, durMs-r.CoveredMs-s.GapMs)
		}
		if _, ok := keep[s.Target]; s.Samples == 0 && s.Joules == 0 && !(ok && isTargetScope(s.Scope)) {
			continue // only neighbours outside the window
		}
		out = append(out, s)
	}
	return out
}

// isTargetScope reports whether samples of scope are a target's (a process
// or pod), not a node's total, zone or unattributed rest.
func isTargetScope(scope string) bool { return scope == "process" || scope == "pod" }

// windowEvents is the count of events in the measured window and where it
// comes from.
type windowEvents struct {
	N    float64
	From string
	// Acked is the generators' own count of the window (when their series
	// exists), beside the broker's.
	Acked    float64
	HasAcked bool
	// Total is the whole load's count, shown when no series exists.
	Total int64
}

func (w windowEvents) count() int64 {
	if w.From == EventsUnknown {
		return w.Total
	}
	return int64(math.Round(w.N))
}

// countEvents counts the events of the window: from the input topic's
// high-water marks when every label set of that series has samples at most
// BrokerEdgeSpan apart around both window edges (interpolated linearly
// there); else from the generators' cumulative acknowledged-records series;
// else unknown.
func countEvents(in Inputs, cfg Config) windowEvents {
	m := in.Run
	w := windowEvents{Total: m.RecordsSent}
	if len(in.RecordsSent) > 0 {
		w.Acked, w.HasAcked = windowDelta(in.RecordsSent, m.MeasureStartMs, m.MeasureEndMs), true
	}
	switch n, ok := bracketDelta(in.HighWatermark, m.MeasureStartMs, m.MeasureEndMs, cfg.BrokerEdgeSpan.Milliseconds()); {
	case ok:
		w.N, w.From = n, EventsFromBroker
	case w.HasAcked:
		w.N, w.From = w.Acked, EventsFromGenerator
	default:
		w.From = EventsUnknown
	}
	return w
}

// bracketDelta is the growth of cumulative series between start and end,
// each interpolated between its samples around each edge; ok is false
// without series or when a series lacks samples at most span apart around
// an edge.
func bracketDelta(series map[string][]store.Point, start, end, span int64) (float64, bool) {
	if len(series) == 0 {
		return 0, false
	}
	var total float64
	for _, l := range sortedKeys(series) {
		pts := series[l]
		a, ok1 := bracket(pts, start, span)
		b, ok2 := bracket(pts, end, span)
		if !ok1 || !ok2 {
			return 0, false
		}
		total += b - a
	}
	return total, true
}

// bracket interpolates sorted pts at t from the last point at or before t
// and the first at or after it, when they are at most span apart.
func bracket(pts []store.Point, t, span int64) (float64, bool) {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].TsMs >= t })
	if i < len(pts) && pts[i].TsMs == t {
		return pts[i].Value, true
	}
	if i == 0 || i == len(pts) {
		return 0, false
	}
	lo, hi := pts[i-1], pts[i]
	if hi.TsMs-lo.TsMs > span {
		return 0, false
	}
	return lo.Value + (hi.Value-lo.Value)*float64(t-lo.TsMs)/float64(hi.TsMs-lo.TsMs), true
}

// windowDelta is the growth of cumulative series over [start, end], each
// series interpolated at the edges.
func windowDelta(series map[string][]store.Point, start, end int64) float64 {
	var total float64
	for _, l := range sortedKeys(series) {
		pts := series[l]
		total += interp(pts, end) - interp(pts, start)
	}
	return total
}

// interp evaluates a cumulative series at t (0 before the first point, the
// last value after the last).
func interp(pts []store.Point, t int64) float64 {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].TsMs >= t })
	switch {
	case i == 0:
		if pts[0].TsMs == t {
			return pts[0].Value
		}
		// Before the first report the generator had sent proportionally
		// less; assume it started from zero one second before its first
		// report.
		t0 := pts[0].TsMs - 1000
		if t <= t0 {
			return 0
		}
		return pts[0].Value * float64(t-t0) / 1000
	case i == len(pts):
		return pts[len(pts)-1].Value
	}
	a, b := pts[i-1], pts[i]
	return a.Value + (b.Value-a.Value)*float64(t-a.TsMs)/float64(b.TsMs-a.TsMs)
}

// LagVerdict is the three-way outcome of the lag-trend SLO.
type LagVerdict int

const (
	// LagNoVerdict: no series, or too few samples after the warm-up.
	LagNoVerdict LagVerdict = iota
	// LagSustained: the slope's whole confidence interval is below the
	// threshold.
	LagSustained
	// LagNotSustained: the whole interval is at or above it.
	LagNotSustained
	// LagUnresolved: the interval contains the threshold; the window's
	// samples cannot tell on which side the slope is.
	LagUnresolved
)

// lagTrend is the outcome of Theodolite's lag-trend SLO check.
type lagTrend struct {
	Found   bool // a lag series exists
	Points  int  // sampled instants with a value
	Verdict bool // enough points for a slope and a verdict
	// Fit is the Theil–Sen slope with Sen's interval at the analyzer's
	// confidence level.
	Fit stats.SlopeFit
	OK  bool // Fit.Slope < the SLO's threshold (the point estimate's verdict)
	// Resolved is the verdict the interval supports.
	Resolved LagVerdict
	// FromMs is where the fit started (lagFitFromMs).
	FromMs int64
}

// Unresolved reports a verdict the window's samples cannot support.
func (lt lagTrend) Unresolved() bool { return lt.Resolved == LagUnresolved }

// lagVerdictOf places a slope's interval against the SLO's threshold (the
// SLO is met by a slope below it).
func lagVerdictOf(f stats.SlopeFit, threshold float64) LagVerdict {
	switch {
	case f.High < threshold:
		return LagSustained
	case f.Low >= threshold:
		return LagNotSustained
	default:
		return LagUnresolved
	}
}

// lagTrendOf samples the summed consumer lag every LagStep from the fit's
// start (lagFitFromMs: after the SLO's warm-up, inside the measurement
// window) to the window end and fits its slope by Theil–Sen (stats.TheilSen
// says why not least squares). Only samples taken at or after the fit's
// start count: the value at an instant is each label set's latest sample in
// [from, instant], and an instant where some label set has none yet is
// skipped rather than summed short — a lag of 0 sampled before the load
// started, carried into the window as "the latest value", made the slope
// grow with the rate whatever the lag did.
func lagTrendOf(series map[string][]store.Point, m *events.RunMeasured, cfg Config, slo LagSLO) lagTrend {
	from := lagFitFromMs(m, slo)
	lt := lagTrend{FromMs: from, Found: len(series) > 0}
	labels := make([]string, 0, len(series))
	for _, l := range sortedKeys(series) {
		if inRange(series[l], from, m.MeasureEndMs) {
			labels = append(labels, l)
		}
	}
	if len(labels) == 0 {
		return lt // a series, but no sample after the warm-up: no verdict
	}
	var xs, ys []float64
	step := cfg.LagStep.Milliseconds()
	for t := from; t <= m.MeasureEndMs; t += step {
		total, all := 0.0, true
		for _, l := range labels {
			pts := series[l]
			// The latest value in [from, t], as an instant query sees it
			// with its look-back cut at the fit's start.
			i := sort.Search(len(pts), func(i int) bool { return pts[i].TsMs > t })
			if i == 0 || pts[i-1].TsMs < from {
				all = false
				break
			}
			total += pts[i-1].Value
		}
		if all {
			xs = append(xs, float64(t-from)/1000)
			ys = append(ys, total)
		}
	}
	lt.Points = len(xs)
	if lt.Points < cfg.LagMinPoints {
		return lt
	}
	xs, ys = thin(xs, ys, lagFitMaxPoints)
	fit, ok := stats.TheilSen(xs, ys, cfg.ConfidenceLevel)
	if !ok {
		return lt
	}
	lt.Verdict, lt.Fit, lt.OK = true, fit, fit.Slope < slo.Threshold
	lt.Resolved = lagVerdictOf(fit, slo.Threshold)
	return lt
}

// lagFitMaxPoints bounds the points of a lag fit. Theil–Sen takes every
// pair's slope: an hour at one point a second is 6.5 M slopes (52 MB, 0.4 s
// of the one-hour analysis); 600 points are 180 K. A longer series is thinned
// to every k-th point (the last kept): the estimate stays the median slope
// of the same trend, and Sen's interval, from fewer points, is wider — a
// verdict it resolves holds all the more.
const lagFitMaxPoints = 600

// thin keeps every k-th point of xs and ys (and the last), so that at most
// limit remain.
func thin(xs, ys []float64, limit int) ([]float64, []float64) {
	n := len(xs)
	if n <= limit {
		return xs, ys
	}
	k := (n + limit - 2) / (limit - 1)
	var tx, ty []float64
	for i := 0; i < n; i += k {
		tx, ty = append(tx, xs[i]), append(ty, ys[i])
	}
	if tx[len(tx)-1] != xs[n-1] {
		tx, ty = append(tx, xs[n-1]), append(ty, ys[n-1])
	}
	return tx, ty
}

// inRange reports whether sorted pts has a point in [from, to].
func inRange(pts []store.Point, from, to int64) bool {
	i := sort.Search(len(pts), func(i int) bool { return pts[i].TsMs >= from })
	return i < len(pts) && pts[i].TsMs <= to
}

// sortedKeys returns m's keys in order, so float sums over them are
// reproducible.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
