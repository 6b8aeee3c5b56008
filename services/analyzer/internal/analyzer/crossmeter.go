package analyzer

import (
	"math"
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Two meters on one node. A series — (scope, target, node, zone) — whose
// window has samples of several sources is either a meter that changed
// (RAPL went away and the model took over: the sources take turns, and
// their samples together cover the window once) or two meters measuring
// the same thing at once by design (RAPL beside a Kepler or Scaphandre
// exporter, a model beside RAPL: each covers the window). Summed, the
// second would count the energy twice and, their samples overlapping,
// make the run invalid as "measured twice". So concurrent sources are
// told apart by coverage: when their covered times add up to more than
// concurrentCoverage windows, the series is measured once by its primary
// source (hardware before model, counter before gauge, then by name) and
// the others become a data-quality figure, the cross-meter residual; the
// overlap check still applies to each source's own samples, so one meter
// written twice stays invalid.
const concurrentCoverage = 1.5

// crossMeter is one node total's energy by its primary meter and by
// another that measured it in the same window.
type crossMeter struct {
	Node             string
	Primary, Other   string
	PrimaryJ, OtherJ float64
	Estimated        bool // either meter is a model
}

// ResidualJ is the other meter's energy minus the primary's.
func (x crossMeter) ResidualJ() float64 { return x.OtherJ - x.PrimaryJ }

// ResidualPct is ResidualJ in % of the primary's energy (NaN without any).
func (x crossMeter) ResidualPct() float64 {
	if x.PrimaryJ == 0 {
		return math.NaN()
	}
	return 100 * x.ResidualJ() / x.PrimaryJ
}

// seriesKey identifies a series across sources.
type seriesKey struct{ Scope, Target, Node, Zone string }

func keyOf(s store.SeriesWindow) seriesKey { return seriesKey{s.Scope, s.TargetID, s.Node, s.Zone} }

// hasMixedSources reports a series with samples of several sources, for
// which gather reads the series by source too.
func hasMixedSources(window []store.SeriesWindow) bool {
	return slices.ContainsFunc(window, func(s store.SeriesWindow) bool { return len(s.Sources) > 1 })
}

// separateMeters replaces each series of mixed whose sources measured the
// window [startMs, endMs] concurrently by its primary source's series from
// bySource, and returns the node totals' cross-meter comparisons. Series
// whose sources took turns, or without their per-source series, stay as
// they are.
func separateMeters(mixed, bySource []store.SeriesWindow, startMs, endMs int64) ([]store.SeriesWindow, []crossMeter) {
	if len(bySource) == 0 {
		return mixed, nil
	}
	per := map[seriesKey][]store.SeriesWindow{}
	for _, s := range bySource {
		per[keyOf(s)] = append(per[keyOf(s)], s)
	}
	durMs := float64(endMs - startMs)
	out := make([]store.SeriesWindow, 0, len(mixed))
	var cross []crossMeter
	for _, s := range mixed {
		srcs := per[keyOf(s)]
		if len(s.Sources) < 2 || len(srcs) < 2 || durMs <= 0 {
			out = append(out, s)
			continue
		}
		energies := seriesOf(srcs, startMs, endMs, map[string]string{s.TargetID: ""})
		var covered float64
		for _, e := range energies {
			covered += durMs - e.UncoveredMs
		}
		if len(energies) < 2 || covered <= concurrentCoverage*durMs {
			out = append(out, s) // a meter that changed: the sources took turns
			continue
		}
		order := make([]int, len(srcs))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return primaryBefore(srcs[order[a]], srcs[order[b]]) })
		primary := srcs[order[0]]
		out = append(out, primary)
		if s.Scope != "node" {
			continue
		}
		joules := map[string]float64{}
		for _, e := range energies {
			joules[e.Sources[0]] = e.Joules
		}
		for _, i := range order[1:] {
			o := srcs[i]
			cross = append(cross, crossMeter{Node: s.Node, Primary: primary.Sources[0], Other: o.Sources[0],
				PrimaryJ: joules[primary.Sources[0]], OtherJ: joules[o.Sources[0]], Estimated: primary.Estimated || o.Estimated})
		}
	}
	return out, cross
}

// primaryBefore orders a series' meters: hardware before a model, a
// counter before a power gauge (integrated), then by name.
func primaryBefore(a, b store.SeriesWindow) bool {
	if a.Estimated != b.Estimated {
		return !a.Estimated
	}
	if a.PowerOnly != b.PowerOnly {
		return !a.PowerOnly
	}
	return a.Sources[0] < b.Sources[0]
}

// crossMeterRows adds, for each node measured by several meters at once,
// how many did and the residual of the one that disagrees most with the
// primary, in J and % (a data-quality figure; the run's energies are the
// primary meter's).
func (c *computation) crossMeterRows() {
	byNode := map[string][]crossMeter{}
	for _, x := range c.cross {
		byNode[x.Node] = append(byNode[x.Node], x)
	}
	var wattSum, raplSum float64
	compared := false
	for _, n := range sortedKeys(byNode) {
		xs := byNode[n]
		worst := xs[0]
		for _, x := range xs[1:] {
			if math.Abs(x.ResidualJ()) > math.Abs(worst.ResidualJ()) {
				worst = x
			}
		}
		est := slices.ContainsFunc(xs, func(x crossMeter) bool { return x.Estimated })
		c.add(results.ScopeNode, n, results.QualityCrossMeters, float64(len(xs)+1), false)
		c.add(results.ScopeNode, n, results.QualityCrossMeterResidualJ, worst.ResidualJ(), est)
		if pct := worst.ResidualPct(); !math.IsNaN(pct) {
			c.add(results.ScopeNode, n, results.QualityCrossMeterResidualPct, pct, est)
		}
		if wattJ, raplJ, ok := wattmeterAndRAPL(xs); ok {
			c.add(results.ScopeNode, n, results.QualityWattmeterRAPLResidualJ, wattJ-raplJ, false)
			if wattJ > 0 {
				c.add(results.ScopeNode, n, results.QualityWattmeterRAPLResidualPct, 100*(wattJ-raplJ)/wattJ, false)
			}
			wattSum, raplSum, compared = wattSum+wattJ, raplSum+raplJ, true
		}
	}
	// The run's: over the nodes both meters measured.
	if compared {
		c.run(results.QualityWattmeterRAPLResidualJ, wattSum-raplSum, false)
		if wattSum > 0 {
			c.run(results.QualityWattmeterRAPLResidualPct, 100*(wattSum-raplSum)/wattSum, false)
		}
	}
}

// wattmeterAndRAPL are a node's energies by its wattmeter and by RAPL when
// both measured it in the window, whichever was the primary meter (the
// primary may be a third: every comparison carries its energy).
func wattmeterAndRAPL(xs []crossMeter) (wattJ, raplJ float64, ok bool) {
	by := map[string]float64{}
	for _, x := range xs {
		by[x.Primary], by[x.Other] = x.PrimaryJ, x.OtherJ
	}
	wattJ, okW := by[energy.SourceWattmeter]
	raplJ, okR := by[energy.SourceRAPL]
	return wattJ, raplJ, okW && okR
}
