package chaos

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
)

// Metrics compared with the undisturbed runs of the same configuration. Each
// has a primary source and a second, independent one (the *2 names); a
// deviation is a violation only when both sources show it.
//
// Energy is judged against the suite's own meter of the same window (the
// collectors' CPU model, recomputed from /proc by the suite): on a machine
// shared with other work, a node's power measures the neighbours, so
// absolute joules differ between identical runs; the ratio of what the
// platform reports to what the suite measured does not, unless the
// platform's data is wrong (a hole, a duplicate, a wrong window).
const (
	// MDelivered is the input records the broker holds whose timestamps fall
	// in the measured window, per second: counted by the suite's own
	// consumer, unique by (key, timestamp). MDelivered2 is the input topic's
	// high-water marks sampled at the window's edges.
	MDelivered  = "delivered_eps"
	MDelivered2 = "delivered_eps_hwm"
	// MOutput is the SUT's output records per second in the window (output
	// high-water marks); MOutput2 the records the suite fetched in it.
	// Information only (see MSUTCPU).
	MOutput  = "output_eps"
	MOutput2 = "output_eps_fetched"
	// MReported is the run's reported events (results row `events`, which
	// the analyzer takes from the generators' acknowledged counts) divided by
	// the records the broker received during the window (high-water marks):
	// 1 when the run reports what happened. MReported2 is run.analyzed's
	// events over the consumer's count of records timestamped in the window
	// (the same when the load generator is on schedule).
	MReported  = "reported_ratio"
	MReported2 = "reported_ratio_event"
	// MSUTCPU is the SUT's CPU use (CPUs) in the window, from /proc;
	// MSUTCPU2 the same as the collector saw it (SUT joules ÷ node joules ×
	// CPUs). Information only, as the SUT's output: a SUT starved of CPU by
	// a loaded machine works less without any kill, and a dead SUT is
	// caught directly (sut_dead, samples_hole).
	MSUTCPU  = "sut_cpus"
	MSUTCPU2 = "sut_cpus_samples"
	// MSUTAnalysis is the results' sut_energy_j divided by the sum of the
	// SUT's raw sample rows in the window as they are finally stored: 1
	// when the analysis used all the data, once (a kill during analysis, a
	// row written late, a re-analysis that merged two, would move it).
	// MSUTAnalysis2 is run.analyzed's energy over the same.
	MSUTAnalysis  = "sut_analysis_ratio"
	MSUTAnalysis2 = "sut_analysis_ratio_event"
	// MSUTEnergy is the results' sut_energy_j divided by the suite's own
	// meter of the SUT in the window; MSUTEnergy2 the raw samples' sum of
	// the SUT's series divided by the same. The collector's split of a
	// node's energy among processes moves with the machine's load (it scales
	// the parts down when process and node CPU times were read at different
	// instants): measured here from 0.64 on an idle machine to 1.0 on a busy
	// one, so this catches gross errors only (its floor is 50 %).
	MSUTEnergy  = "sut_energy_ratio"
	MSUTEnergy2 = "sut_energy_ratio_samples"
	// MNodeEnergy is node_energy_j over the suite's own meter of the node
	// (the same CPU model, so the ratio is 1 within a few tenths of a per
	// cent whatever the load); MNodeEnergy2 the node series' samples over
	// the same.
	MNodeEnergy  = "node_energy_ratio"
	MNodeEnergy2 = "node_energy_ratio_samples"
	// Reported for information, not judged: absolute power depends on
	// what else the machine runs.
	MSUTPower   = "sut_w"
	MNodePower  = "node_w"
	MOwnNodePow = "own_node_w"
)

// compared pairs each primary metric with its second source.
var compared = []struct{ primary, second, kind string }{
	{MDelivered, MDelivered2, "records"},
	{MReported, MReported2, "events_reported"},
	{MSUTAnalysis, MSUTAnalysis2, "sut_analysis"},
	{MSUTEnergy, MSUTEnergy2, "sut_energy"},
	{MNodeEnergy, MNodeEnergy2, "node_energy"},
}

// JudgedMetrics lists the compared metrics, primary then second source.
func JudgedMetrics() []string {
	var out []string
	for _, c := range compared {
		out = append(out, c.primary, c.second)
	}
	return out
}

// InfoMetrics are measured and banded like the judged ones, and reported,
// but never a violation.
func InfoMetrics() []string { return []string{MOutput, MOutput2, MSUTCPU, MSUTCPU2} }

// Tolerance is how the bands around the undisturbed runs are drawn.
type Tolerance struct {
	// Factor multiplies the largest relative (log) deviation of an
	// undisturbed run from their median; Floor (per metric) is the
	// narrowest half-width, because a handful of runs underestimates the
	// spread.
	Factor float64
	Floor  map[string]float64
	// HoleMs is the longest uncovered stretch a target's sample series may
	// have in a done run's window; 0 derives it from the undisturbed runs:
	// twice their largest hole, at least two sampling intervals.
	HoleMs     int64
	IntervalMs int64
}

// DefaultTolerance is three times the observed spread, never narrower than
// a floor set by how finely each quantity can be measured in one window:
//   - records: 2 % counted by the suite's consumer, 3 % from high-water
//     marks (sampled every 200 ms, interpolated at the edges); a load
//     generator on a loaded machine trails by about 1 %, which the spread
//     of the undisturbed runs then shows;
//   - the reported count: 3 % (interpolating the per-second progress series
//     at the window's edges);
//   - SUT output: 20 % (the UC-3 processor emits once per emitInterval, 1 s:
//     one emission more or less in an 8 s window is 12.5 %);
//   - SUT activity: 20 % (CPU times have 10 ms resolution; the SUT at 500
//     msg/s uses about 30 ticks in 8 s);
//   - the analysis against the stored samples: 2 % (the same rows summed
//     the same way);
//   - SUT energy against the suite's meter: 50 % (see MSUTEnergy);
//   - node energy against the suite's meter: 5 %.
func DefaultTolerance(intervalMs int64) Tolerance {
	return Tolerance{Factor: 3, IntervalMs: intervalMs, Floor: map[string]float64{
		MDelivered: 0.02, MDelivered2: 0.03, MReported: 0.03, MReported2: 0.03, MOutput: 0.20, MOutput2: 0.20,
		MSUTCPU: 0.20, MSUTCPU2: 0.20, MSUTAnalysis: 0.02, MSUTAnalysis2: 0.02, MSUTEnergy: 0.50, MSUTEnergy2: 0.50,
		MNodeEnergy: 0.05, MNodeEnergy2: 0.05,
	}}
}

// Band is the accepted range of one metric for one configuration, in log
// space: |ln(v / Median)| ≤ Tol.
type Band struct {
	Median float64   `json:"median"`
	Tol    float64   `json:"tol_log"`
	Spread float64   `json:"spread_log"` // largest |ln(v/median)| of the undisturbed runs
	N      int       `json:"n"`
	Values []float64 `json:"values"`
}

// Low and High are the band's edges.
func (b Band) Low() float64  { return b.Median * math.Exp(-b.Tol) }
func (b Band) High() float64 { return b.Median * math.Exp(b.Tol) }

// Contains reports whether v is inside the band.
func (b Band) Contains(v float64) bool {
	if b.Median <= 0 || v <= 0 {
		return v == b.Median
	}
	return math.Abs(math.Log(v/b.Median)) <= b.Tol+1e-12
}

// Weak reports a band wider than a factor of two either way: the metric
// then only catches gross errors.
func (b Band) Weak() bool { return b.Tol > math.Ln2 }

func (b Band) String() string {
	return fmt.Sprintf("%.4g [%.4g, %.4g] (n=%d, spread ±%.1f%%, tol ±%.1f%%)", b.Median, b.Low(), b.High(), b.N,
		(math.Exp(b.Spread)-1)*100, (math.Exp(b.Tol)-1)*100)
}

// Bands derives, per configuration and metric, the band from the
// undisturbed runs that ended done without data-quality flags (caveats, see
// results.Caveat, do not count). A configuration with
// fewer than two such runs gets no bands (the caller reports it).
func Bands(undisturbed []RunFacts, tol Tolerance) map[string]map[string]Band {
	by := map[string]map[string][]float64{}
	for _, r := range undisturbed {
		if r.State != "done" || len(results.DataQuality(r.Flags)) > 0 {
			continue
		}
		if by[r.Config] == nil {
			by[r.Config] = map[string][]float64{}
		}
		for m, v := range r.Metrics {
			if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
				by[r.Config][m] = append(by[r.Config][m], v)
			}
		}
	}
	out := map[string]map[string]Band{}
	for cfg, ms := range by {
		for m, vs := range ms {
			if len(vs) < 2 {
				continue
			}
			med := stats.Median(vs)
			spread := 0.0
			for _, v := range vs {
				spread = max(spread, math.Abs(math.Log(v/med)))
			}
			if out[cfg] == nil {
				out[cfg] = map[string]Band{}
			}
			out[cfg][m] = Band{Median: med, Spread: spread, Tol: max(tol.Factor*spread, math.Log1p(tol.Floor[m])), N: len(vs), Values: vs}
		}
	}
	return out
}

// HoleTolerance is the longest hole a done run's target series may have.
func HoleTolerance(undisturbed []RunFacts, tol Tolerance) int64 {
	if tol.HoleMs > 0 {
		return tol.HoleMs
	}
	var worst int64
	for _, r := range undisturbed {
		for _, s := range r.Series {
			worst = max(worst, s.Coverage.MaxHoleMs)
		}
	}
	return max(2*worst, 2*tol.IntervalMs)
}

// Violation is one broken invariant.
type Violation struct {
	RunID  string `json:"run_id,omitempty"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
	// Confirmed: a second, independent query shows it too.
	Confirmed bool `json:"confirmed"`
	// Excused says why a confirmed deviation is not counted: the machine
	// was overloaded during the window, so a comparison with runs measured
	// in other conditions says nothing about the kill.
	Excused string `json:"excused,omitempty"`
}

// Counts reports a violation that fails the suite: confirmed and not
// excused. The others are listed, as uncertain or excused.
func (v Violation) Counts() bool { return v.Confirmed && v.Excused == "" }

func (v Violation) String() string {
	c := ""
	switch {
	case !v.Confirmed:
		c = " (UNCONFIRMED: second source disagrees)"
	case v.Excused != "":
		c = " (NOT COUNTED: " + v.Excused + ")"
	}
	id := v.RunID
	if id == "" {
		id = "suite"
	}
	return fmt.Sprintf("%s: %s: %s%s", id, v.Kind, v.Detail, c)
}

// finalStates are the states a run ends in.
var finalStates = map[string]bool{"done": true, "failed": true, "cancelled": true}

// inRun are the states between provisioned and torn down: the SUT must be
// alive throughout them.
var inRun = map[string]bool{"baseline": true, "warmup": true, "measuring": true, "cooldown": true}

// Judge checks one run against the invariants. It is pure: every fact,
// including the second source of each, was gathered before. A comparison
// with the undisturbed runs is excused when the run's window had a CPU
// pressure above maxPressure (a share of time; ≤ 0 disables the excuse).
func Judge(r RunFacts, bands map[string]Band, holeTolMs int64, maxPressure float64) []Violation {
	var out []Violation
	add := func(kind string, confirmed bool, format string, args ...any) {
		out = append(out, Violation{RunID: r.RunID, Kind: kind, Detail: fmt.Sprintf(format, args...), Confirmed: confirmed})
	}
	if !finalStates[r.State] {
		add("stuck", r.StuckConfirmed, "still %q after the bound of %s", r.State, r.Bound)
	}
	if r.DupSamples > 0 {
		add("duplicate_samples", r.DupSamplesConfirmed > 0, "%d (series, ts_ms) keys stored more than once in the run's time range (re-read: %d)",
			r.DupSamples, r.DupSamplesConfirmed)
	}
	if r.DupRunMetrics > 0 {
		add("duplicate_run_metrics", r.DupRunMetricsConfirmed > 0, "%d run_metrics points stored more than once (re-read: %d)", r.DupRunMetrics, r.DupRunMetricsConfirmed)
	}
	if r.DupResults > 0 {
		add("duplicate_results", r.DupResultsConfirmed > 0, "%d result keys more than once after FINAL (re-read: %d)", r.DupResults, r.DupResultsConfirmed)
	}
	if r.State != "done" {
		return out
	}
	if r.SUT.DiedAtMs > 0 {
		add("sut_dead", r.SUT.DeathConfirmed, "the system under test (pid %v) was gone at %s, in phase %s, yet the run ended done",
			r.SUT.PIDs, msTime(r.SUT.DiedAtMs), r.SUT.StateAtDeath)
	}
	if len(results.DataQuality(r.Flags)) > 0 {
		return out // a flagged run may deviate: it says so
	}
	for _, c := range compared {
		v, ok := r.Metrics[c.primary]
		b, hasBand := bands[c.primary]
		if !ok || !hasBand || b.Contains(v) {
			continue
		}
		v2, ok2 := r.Metrics[c.second]
		b2, hasBand2 := bands[c.second]
		confirmed := ok2 && hasBand2 && !b2.Contains(v2)
		second := "no second source"
		if ok2 && hasBand2 {
			second = fmt.Sprintf("%s %.4g vs %s", c.second, v2, b2)
		}
		add(c.kind, confirmed, "%s %.4g outside the undisturbed runs' %s; %s; not flagged", c.primary, v, b, second)
		if p := r.Pressure(); maxPressure > 0 && p > maxPressure {
			out[len(out)-1].Excused = fmt.Sprintf("the machine was overloaded: CPU pressure %.0f%% of the window, above %.0f%%", p*100, maxPressure*100)
		}
	}
	for _, s := range r.Series {
		if s.Coverage.MaxHoleMs <= holeTolMs {
			continue
		}
		h := longest(s.Coverage.Holes)
		add("samples_hole", s.HoleConfirmed, "series %s: %d ms of the window uncovered, longest hole %d ms (%s–%s; tolerance %d ms), not flagged",
			s.Key, s.Coverage.UncoveredMs, s.Coverage.MaxHoleMs, msTime(h.StartMs), msTime(h.EndMs), holeTolMs)
	}
	return out
}

func longest(hs []Hole) Hole {
	var l Hole
	for _, h := range hs {
		if h.Len() > l.Len() {
			l = h
		}
	}
	return l
}

// Outcome classes of the table.
const (
	OutDone          = "done"
	OutDoneFlagged   = "done-flagged"
	OutFailedRetried = "failed-retried"
	OutFailed        = "failed"
	OutViolation     = "violation"
)

// Outcomes lists the table's columns in order.
var Outcomes = []string{OutDone, OutDoneFlagged, OutFailedRetried, OutFailed, OutViolation}

// OutcomeOf classifies a slot: a violation in any of its runs (the killed
// run and its retries) wins; otherwise the killed run's own ending.
func OutcomeOf(first RunFacts, violations []Violation) string {
	for _, v := range violations {
		if v.Counts() {
			return OutViolation
		}
	}
	switch {
	case first.State == "done" && len(results.DataQuality(first.Flags)) > 0:
		return OutDoneFlagged
	case first.State == "done":
		return OutDone
	case first.State == "failed" && first.RetriedAs != "":
		return OutFailedRetried
	case first.State == "failed" || first.State == "cancelled":
		return OutFailed
	}
	return OutViolation // not final: stuck
}

// kindsOf lists the distinct confirmed violation kinds, for the table.
func kindsOf(vs []Violation) string {
	set := map[string]bool{}
	for _, v := range vs {
		if v.Counts() {
			set[v.Kind] = true
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
