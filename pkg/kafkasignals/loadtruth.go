package kafkasignals

import (
	"encoding/json"
	"math"
	"sort"

	"github.com/greenflow/greenflow/pkg/store"
)

// Load truth: what the load generators delivered in each second, by the
// time Kafka acknowledged it — not by the records' timestamps, which are
// their scheduled times and look perfect whatever was late. Each series has
// one point per second of the schedule, stamped with the second's start
// (the schedule's start + k s).
const (
	// MetricLoadOffered is the records the schedule holds in each whole
	// second (the whole load; no labels), written by the leader.
	MetricLoadOffered = "load_offered_per_second"
	// MetricLoadOnTime is, per instance ({"instance":…}), the records due
	// in each second of the schedule that Kafka acknowledged by the end of
	// that second plus the generator's report lag (500 ms): the second's
	// delivered records, as the rate check counts them. A record later
	// than that does not count for its second (nor for any other).
	MetricLoadOnTime = "load_on_time_per_second"
	// MetricLoadAcked is, per instance, the records Kafka acknowledged
	// during each wall-clock second from the schedule's start (shows where
	// late records went: a catch-up).
	MetricLoadAcked = "load_acked_per_second"
	// MetricLoadSent is, per instance, the records handed to the Kafka
	// client during each second.
	MetricLoadSent = "load_sent_per_second"
	// MetricLoadLatenessMax is, per instance, the largest lateness
	// (acknowledgement time − scheduled time, ms) of the records
	// acknowledged in each second.
	MetricLoadLatenessMax = "load_lateness_max_ms"
	// RateTolerance is how far a second's delivered records may deviate
	// from the offered ones (a fraction of them) before the run's load is
	// flagged as deviating.
	RateTolerance = 0.01
)

// PerSecondPoints are the points of one per-second series: values[k] is
// second k of the schedule that started at startMs.
func PerSecondPoints(t Target, name string, labels map[string]string, startMs int64, values []float64) []store.RunMetric {
	l, _ := json.Marshal(labels) // keys come out sorted; nil gives "null"
	if labels == nil {
		l = []byte("{}")
	}
	out := make([]store.RunMetric, len(values))
	for k, v := range values {
		out[k] = store.RunMetric{ExperimentID: t.ExperimentID, RunID: t.RunID, TsMs: startMs + int64(k)*1000, Name: name, Labels: string(l), Value: v}
	}
	return out
}

// Truth is a run's per-second load, keyed by the second's start (ms):
// the offered records, those delivered on time summed over instances, and
// the largest lateness of any instance.
type Truth struct {
	Offered, OnTime, LatenessMs map[int64]float64
}

// TruthFrom folds the stored series (one per label set, as the store reads
// them) into a Truth.
func TruthFrom(offered, onTime, lateness map[string][]store.Point) Truth {
	t := Truth{Offered: map[int64]float64{}, OnTime: map[int64]float64{}, LatenessMs: map[int64]float64{}}
	for _, s := range offered {
		for _, p := range s {
			t.Offered[p.TsMs] = max(t.Offered[p.TsMs], p.Value) // one series; written twice is the same
		}
	}
	for _, s := range onTime {
		for _, p := range s {
			t.OnTime[p.TsMs] += p.Value
		}
	}
	for _, s := range lateness {
		for _, p := range s {
			t.LatenessMs[p.TsMs] = max(t.LatenessMs[p.TsMs], p.Value)
		}
	}
	return t
}

// Deviation is the check of a window's per-second delivered rate against
// the offered one.
type Deviation struct {
	// Checked is how many seconds were compared: the whole seconds of the
	// schedule lying entirely inside the window (a second cut by the
	// window's edge is not compared: part of it belongs to the warm-up or
	// the cool-down). Deviating is how many deviated beyond the tolerance.
	Checked, Deviating int
	// Worst is the second deviating most (its start, ms), with its offered
	// and delivered records; Ratio is delivered/offered there.
	WorstAtMs                    int64
	WorstOffered, WorstDelivered float64
	Ratio                        float64
	// MaxLatenessMs is the largest lateness within the checked seconds.
	MaxLatenessMs float64
	// LateStartMs is how long after the window's start the load's schedule
	// started (0 when it started before): the window measured no load
	// there, though no second of the schedule deviated (the generators
	// prepared for longer than the warm-up lasted).
	LateStartMs int64
}

// Flagged is whether any checked second deviated, or the load started
// inside the window.
func (d Deviation) Flagged() bool { return d.Deviating > 0 || d.LateStartMs > 0 }

// CheckRate compares, for every whole second of the schedule inside
// [fromMs, toMs], the records delivered in it (due in it and acknowledged
// by Kafka within the report lag of its end: MetricLoadOnTime) with those
// offered: a second deviates when |delivered − offered| > tol × offered.
// Counting by due second with a stated lateness bound, rather than by the
// wall-clock second of each acknowledgement, keeps the check exact on a
// busy machine (acknowledgements jitter by tens of ms there, which moved
// 1–3 % of a second's records across its edges in a healthy run) while a
// stall longer than the bound, and the catch-up after it, deviate. Seconds
// without an offered point (outside the schedule, or its partial last
// second) are not compared; a Truth without delivery series (a generator
// that recorded none) checks nothing.
func CheckRate(t Truth, fromMs, toMs int64, tol float64) Deviation {
	d := Deviation{Ratio: math.NaN()}
	if len(t.OnTime) == 0 {
		return d
	}
	secs := make([]int64, 0, len(t.Offered))
	for ts := range t.Offered {
		secs = append(secs, ts)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
	if len(secs) > 0 && secs[0] > fromMs && secs[0] < toMs {
		d.LateStartMs = secs[0] - fromMs
	}
	worst := -1.0
	for _, ts := range secs {
		off := t.Offered[ts]
		if ts < fromMs || ts+1000 > toMs || off <= 0 {
			continue
		}
		d.Checked++
		d.MaxLatenessMs = max(d.MaxLatenessMs, t.LatenessMs[ts])
		got := t.OnTime[ts]
		dev := math.Abs(got-off) / off
		if dev > tol {
			d.Deviating++
		}
		if dev > worst {
			worst = dev
			d.WorstAtMs, d.WorstOffered, d.WorstDelivered, d.Ratio = ts, off, got, got/off
		}
	}
	return d
}
