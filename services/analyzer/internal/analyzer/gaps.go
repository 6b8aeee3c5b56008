package analyzer

import (
	"cmp"
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Recorded gaps. The collectors write a row to the gaps table wherever
// their data has a hole they know of — samples dropped past the spool
// bound, a source restarted from a fresh baseline, a counter increase
// beyond plausible power that was not counted — so an analysis made later
// sees why a stretch is missing rather than a silent hole (and an outage:
// the meter unread for a while, one sample spanning it). A run whose
// measured window one touches is flagged (energy_gap_recorded, or
// energy_counter_implausible for the latter) and quality_recorded_gap_s
// says how much window time was lost: per node the union of its gaps
// clipped to the window, summed over the nodes for the run. The verdict's
// own checks of the samples (bridging bounds, coverage) still decide
// whether the run is valid; this tells the reader what happened there.

// addRecordedGaps adds the flags and figures of the gaps (Inputs.Gaps) to
// an analysis.
func addRecordedGaps(m *events.RunMeasured, gaps []store.Gap, rows []store.Result, sum events.RunAnalyzed) ([]store.Result, events.RunAnalyzed) {
	if len(gaps) == 0 {
		return rows, sum
	}
	byNode := map[string][][2]int64{}
	flags := map[string]bool{}
	for _, g := range gaps {
		from, to := max(g.FromMs, m.MeasureStartMs), min(g.ToMs, m.MeasureEndMs)
		if to < from {
			continue
		}
		byNode[g.Node] = append(byNode[g.Node], [2]int64{from, to})
		if g.Reason == store.GapImplausible {
			flags[results.FlagEnergyImplausible] = true
		} else {
			flags[results.FlagEnergyGapRecorded] = true
		}
	}
	var totalMs int64
	add := func(scope, subject, metric string, v float64) {
		rows = append(rows, store.Result{Scope: scope, Subject: subject, Metric: metric, Value: v, Unit: results.Unit(metric)})
	}
	// Per node only beside the node's own energy row (none when the window
	// had no energy: the verdict is all there is).
	measured := map[string]bool{}
	for _, r := range rows {
		if r.Scope == results.ScopeNode && r.Metric == results.EnergyJ {
			measured[r.Subject] = true
		}
	}
	for _, n := range sortedKeys(byNode) {
		ms := unionMs(byNode[n])
		totalMs += ms
		if measured[n] {
			add(results.ScopeNode, n, results.QualityRecordedGapS, float64(ms)/1000)
		}
	}
	add(results.ScopeRun, "", results.QualityRecordedGapS, float64(totalMs)/1000)
	for _, f := range sortedSet(flags) {
		if !slices.Contains(sum.Flags, f) {
			sum.Flags = append(sum.Flags, f)
			add(results.ScopeRun, "", results.FlagMetric(f), 1)
		}
	}
	sort.Strings(sum.Flags)
	return rows, sum
}

// unionMs is the length of the union of closed intervals.
func unionMs(iv [][2]int64) int64 {
	slices.SortFunc(iv, func(a, b [2]int64) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	var total int64
	cur := iv[0]
	for _, x := range iv[1:] {
		if x[0] <= cur[1] {
			cur[1] = max(cur[1], x[1])
			continue
		}
		total += cur[1] - cur[0]
		cur = x
	}
	return total + cur[1] - cur[0]
}
