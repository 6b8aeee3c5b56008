package analyzer

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/results"
)

// Where the events of the measured window were counted.
const (
	EventsFromBroker    = "broker"    // the input topic's high-water marks
	EventsFromGenerator = "generator" // the generators' acknowledged-records series
	EventsUnknown       = ""          // no series: the window's load cannot be checked
)

// Policy is the verdict's part of the configuration: the bounds beyond
// which a run is invalid.
type Policy struct {
	// LoadTolerance is the relative shortfall of events in the window
	// against offered rate × window that still counts as delivered; a
	// surplus beyond it (a catch-up after a stall, a back-fill) is as
	// invalid: the window measured a load the spec did not ask for.
	LoadTolerance float64
	// LoadEdgeSlack adds offered rate × this many seconds to the tolerance:
	// records due just before the window end may reach the broker just
	// after it (pacing and acknowledgment jitter; a 100 ms stall of the
	// generator on a busy machine), which costs a fixed count, however long
	// the window — a large share of a short one.
	LoadEdgeSlack time.Duration
	// MaxBridgedGap and MaxBridgedIntervals bound a bridged sample gap of
	// one series: it may last up to the larger of MaxBridgedGap and
	// MaxBridgedIntervals sampling intervals of that series.
	MaxBridgedGap       time.Duration
	MaxBridgedIntervals int
	// MaxUncovered is the window time of one series that neither a sample
	// nor a bridged gap may cover (edges with no sample beyond them).
	MaxUncovered time.Duration
	// MaxOverlap is the window time of one series that two samples may
	// both cover. One collector's samples abut, so anything above a few
	// milliseconds is the same stretch measured twice (two collectors
	// reading one machine's meter) and its energy counted twice.
	MaxOverlap time.Duration
}

// SeriesQuality is the coverage of one node's total or one target's series
// in the measured window.
type SeriesQuality struct {
	Kind             string // "node" or "target"
	Name             string // node name or target id
	IntervalMs       int64  // the series' longest sampling interval
	MedianIntervalMs int64  // its usual one (0: unknown, IntervalMs is used)
	Gaps             uint64
	MaxGapMs         float64 // the longest bridged gap
	// Stretches are samples spanning over twice the usual interval; the
	// longest spans MaxStretchMs beyond it.
	Stretches    uint64
	MaxStretchMs float64
	OverlapMs    float64  // window time covered twice
	Collectors   []string // the collector instances that wrote the series
	UncoveredMs  float64
}

// LoadAccount is the load generator's account of the run's load
// (load.finished v2).
type LoadAccount struct {
	Takeovers, Restarts int
	Backfilled, Missed  int64
	RateDeviated        bool // a second of the window deviated from the offered rate (loadtruth.go)
}

// VerdictInput is everything the verdict is decided from; gathering it is
// the caller's I/O.
type VerdictInput struct {
	WindowMs    int64
	OfferedRate float64 // msg/s; 0 when the run offered no load
	Events      float64 // events in the window
	EventsFrom  string  // EventsFromBroker, EventsFromGenerator or EventsUnknown
	// Nodes are the run's nodes; those without any sample in the window
	// are in MissingNodes.
	Nodes        []string
	MissingNodes []string
	Series       []SeriesQuality
	// LostTargets had samples during the run but none in the window;
	// UnmeasuredTargets never had any.
	LostTargets       []string
	UnmeasuredTargets []string
	SamplesLate       bool
	Load              LoadAccount
}

// Verdict says whether a run kept the platform's invariant. Reasons (when
// Invalid) and Flags are sorted and free of duplicates.
type Verdict struct {
	Invalid bool
	Reasons []string
	Flags   []string
	// DeliveredRatio is events / (offered rate × window); NaN without an
	// offered load or an event count.
	DeliveredRatio float64
}

// Reason joins the reasons for a run's failure reason.
func (v Verdict) Reason() string { return strings.Join(v.Reasons, "; ") }

// gapBound is the longest bridged gap a series with the given sampling
// interval may have.
func (p Policy) gapBound(intervalMs int64) float64 {
	return math.Max(float64(p.MaxBridgedGap.Milliseconds()), float64(int64(p.MaxBridgedIntervals)*intervalMs))
}

// Judge decides a run's verdict. It is pure: the same input gives the same
// verdict.
func Judge(in VerdictInput, p Policy) Verdict {
	v := Verdict{DeliveredRatio: math.NaN()}
	reasons, flags := map[string]bool{}, map[string]bool{}

	// The offered load, delivered in the window.
	if in.OfferedRate > 0 && in.WindowMs > 0 {
		want := in.OfferedRate * float64(in.WindowMs) / 1000
		switch in.EventsFrom {
		case EventsUnknown:
			reasons["the load in the measured window cannot be checked: no kafka_input_high_watermark or load_records_sent series"] = true
		default:
			v.DeliveredRatio = in.Events / want
			allowed := p.LoadTolerance*want + in.OfferedRate*p.LoadEdgeSlack.Seconds()
			src := map[string]string{EventsFromBroker: "the input topic's high-water marks", EventsFromGenerator: "the generators' acknowledged records"}[in.EventsFrom]
			switch {
			case want-in.Events > allowed:
				reasons[fmt.Sprintf("offered load not delivered in the measured window: %.0f of %.0f events (%.1f%%; tolerance %.1f%% + %s of load) by %s",
					in.Events, want, v.DeliveredRatio*100, p.LoadTolerance*100, p.LoadEdgeSlack, src)] = true
			case in.Events-want > allowed:
				flags[results.FlagLoadSurplus] = true
				reasons[fmt.Sprintf("more load than offered in the measured window: %.0f of %.0f events (%.1f%%; tolerance %.1f%% + %s of load) by %s — a catch-up or back-fill measured a load the spec did not ask for",
					in.Events, want, v.DeliveredRatio*100, p.LoadTolerance*100, p.LoadEdgeSlack, src)] = true
			}
		}
	}

	// Energy samples: every node, every target, complete within the bounds.
	for _, n := range in.MissingNodes {
		reasons[fmt.Sprintf("no energy samples for node %s in the measured window", n)] = true
	}
	for _, t := range in.LostTargets {
		reasons[fmt.Sprintf("target %s was measured during the run but not in the measured window (did it stop?)", t)] = true
	}
	if len(in.UnmeasuredTargets) > 0 {
		flags[results.FlagTargetUnmeasured] = true
	}
	maxUncovered := float64(p.MaxUncovered.Milliseconds())
	for _, s := range in.Series {
		nominal := s.MedianIntervalMs
		if nominal <= 0 {
			nominal = s.IntervalMs
		}
		bound := p.gapBound(nominal)
		if s.MaxGapMs > bound {
			reasons[fmt.Sprintf("energy samples of %s %s missing for %.1f s (bridging bound %.1f s)", s.Kind, s.Name, s.MaxGapMs/1000, bound/1000)] = true
		} else if s.Gaps > 0 {
			flags[results.FlagEnergyGapBridged] = true
		}
		if s.MaxStretchMs > bound {
			reasons[fmt.Sprintf("energy samples of %s %s: one sample spans %.1f s beyond the usual %.1f s interval — the meter went unread (bound %.1f s)",
				s.Kind, s.Name, s.MaxStretchMs/1000, float64(nominal)/1000, bound/1000)] = true
		} else if s.Stretches > 0 {
			flags[results.FlagSamplesStretched] = true
		}
		if s.OverlapMs > float64(p.MaxOverlap.Milliseconds()) {
			reasons[fmt.Sprintf("energy samples of %s %s cover %.1f s of the window twice (collectors %s): measured twice, its energy would count twice",
				s.Kind, s.Name, s.OverlapMs/1000, strings.Join(s.Collectors, ", "))] = true
		}
		if s.UncoveredMs > maxUncovered {
			reasons[fmt.Sprintf("energy samples of %s %s cover %.1f s less than the measured window (bound %.1f s)", s.Kind, s.Name,
				s.UncoveredMs/1000, maxUncovered/1000)] = true
		}
	}
	if in.SamplesLate {
		flags[results.FlagSamplesLate] = true
	}

	// What the load generators recovered from.
	for flag, on := range map[string]bool{results.FlagLoadTakeover: in.Load.Takeovers > 0, results.FlagLoadRestart: in.Load.Restarts > 0,
		results.FlagLoadBackfilled: in.Load.Backfilled > 0, results.FlagLoadMissed: in.Load.Missed > 0,
		results.FlagLoadRateDeviation: in.Load.RateDeviated} {
		if on {
			flags[flag] = true
		}
	}

	v.Reasons, v.Flags = sortedSet(reasons), sortedSet(flags)
	v.Invalid = len(v.Reasons) > 0
	return v
}

func sortedSet(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	return sortedKeys(m)
}
