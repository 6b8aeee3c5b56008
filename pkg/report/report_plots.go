package report

import (
	"fmt"
	"math"
	"sort"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// The report's plots beyond energy per event and the Pareto front: what a
// stream-processing researcher checks first — did the system keep up (lag
// over time against the SLO, delivered against offered throughput) — and
// each run's power on scales that let small components be read.

// otherFactors names the combination of a configuration's factors that do
// not set the load: the line a configuration belongs to in the load plots.
func otherFactors(f map[string]string) string {
	other := map[string]string{}
	for k, v := range f {
		if !loadFactor(k) {
			other[k] = v
		}
	}
	return runcharts.Factors(other)
}

// lineName is the legend entry of a line of configurations: their shared
// non-load factors, or what the line shows when there are none.
func lineName(key, what string) string {
	if key == "-" {
		return what
	}
	return key
}

// LagSLOFailedName is the legend entry of the points whose run (or
// configuration) failed the lag SLO: their µJ/event divides by events put
// into Kafka, not processed, so a SUT that fell behind looks cheapest.
const LagSLOFailedName = "lag SLO failed: the SUT fell behind; µJ/event counts events it did not process"

// runFailedLagSLO reports whether the analyzer found the run's lag growing
// faster than the SLO allows (lag_slo_ok = 0).
func runFailedLagSLO(r ResultRow) bool {
	v, ok := r.Metrics[results.LagSLOOK]
	return ok && v == 0
}

// runLagSLO is a run's lag-SLO verdict for the tables: ok, FAIL or "-"
// when the run has no lag figures.
func runLagSLO(r ResultRow) string {
	v, ok := r.Metrics[results.LagSLOOK]
	switch {
	case !ok:
		return "-"
	case v == 0:
		return "FAIL"
	}
	return "ok"
}

// repetitions is a grey series of the done runs' values of metric (those
// keep accepts) at their configuration's mean offered load, set a little
// to the right of the mean so the points and the error bar do not hide
// each other.
func repetitions(sums []ConfigSummary, rows []ResultRow, metric string, keep func(ResultRow) bool) svgplot.Series {
	byRun := map[string]ResultRow{}
	for _, r := range rows {
		byRun[r.RunID] = r
	}
	s := svgplot.Series{Name: "repetitions", Marker: true, Color: "#999999"}
	var xmax float64
	for _, c := range sums {
		xmax = math.Max(xmax, c.mean(results.OfferedRateEPS))
	}
	for _, c := range sums {
		x := c.mean(results.OfferedRateEPS)
		for i, id := range c.RunIDs {
			v, ok := byRun[id].Metrics[metric]
			if !ok || !keep(byRun[id]) {
				continue
			}
			s.X = append(s.X, x+xmax*(0.012+0.006*float64(i%4)))
			s.Y = append(s.Y, v)
		}
	}
	return s
}

// meanLines draws metric's mean ± CI against mean offered load, one line
// per combination of the non-load factors, sorted by load. what names the
// lines in the legend ("" for the factors alone).
func meanLines(sums []ConfigSummary, metric, what string) []svgplot.Series {
	lines := map[string]*svgplot.Series{}
	var keys []string
	for _, s := range sums {
		key := otherFactors(s.Factors)
		ln, ok := lines[key]
		if !ok {
			name := lineName(key, "mean ± CI")
			if what != "" {
				name = lineName(key, what)
				if key != "-" {
					name = what + ": " + key
				}
			}
			ln = &svgplot.Series{Name: name, Line: true, Marker: true, ClampLo: results.Positive(metric)}
			lines[key] = ln
			keys = append(keys, key)
		}
		m := s.Metrics[metric]
		ln.X, ln.Y = append(ln.X, s.mean(results.OfferedRateEPS)), append(ln.Y, m.Mean)
		ln.Lo, ln.Hi = append(ln.Lo, m.CILow), append(ln.Hi, m.CIHigh)
	}
	sort.Strings(keys)
	out := make([]svgplot.Series, 0, len(keys))
	for _, k := range keys {
		sortSeriesByX(lines[k])
		out = append(out, *lines[k])
	}
	return out
}

// LoadPlot draws a metric's mean ± CI against mean offered load, one line per
// combination of the non-load factors, and each repetition beside it. The
// configurations and runs that failed the lag SLO are crosses of their own,
// off the lines: their energy per event is not comparable with the rest.
func LoadPlot(sums []ConfigSummary, rows []ResultRow, metric, title string) svgplot.Plot {
	p := svgplot.Plot{Title: title, XLabel: "offered load (events/s)", YLabel: "µJ per event", YFromZero: true, XPad: true}
	var kept, failed []ConfigSummary
	for _, s := range sums {
		if lagVerdict(s) == "FAIL" {
			failed = append(failed, s)
		} else {
			kept = append(kept, s)
		}
	}
	p.Series = append(meanLines(kept, metric, ""), repetitions(sums, rows, metric, func(r ResultRow) bool { return !runFailedLagSLO(r) }))
	bad := repetitions(sums, rows, metric, runFailedLagSLO)
	bad.Name, bad.Color, bad.Shape = LagSLOFailedName, "#B00020", "cross"
	bad.ClampLo = results.Positive(metric)
	bad.Lo, bad.Hi = nans(len(bad.X)), nans(len(bad.X))
	for _, s := range failed {
		m := s.Metrics[metric]
		bad.X, bad.Y = append(bad.X, s.mean(results.OfferedRateEPS)), append(bad.Y, m.Mean)
		bad.Lo, bad.Hi = append(bad.Lo, m.CILow), append(bad.Hi, m.CIHigh)
	}
	if len(bad.X) > 0 {
		p.Series = append(p.Series, bad)
	}
	return p
}

func nans(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.NaN()
	}
	return out
}

// ProcessedName is the legend entry of what the SUT processed.
const ProcessedName = "processed (estimated from lag growth)"

// processedEPS is what the SUT processed in a run, estimated: what the
// generator delivered into Kafka less what piled up in the consumer lag
// (its fitted trend), never below zero. ok is false without both figures.
func processedEPS(r ResultRow) (float64, bool) {
	thr, ok := r.Metrics[results.ThroughputEPS]
	slope, ok2 := r.Metrics[results.LagTrendSlope]
	if !ok || !ok2 {
		return 0, false
	}
	return math.Max(0, thr-slope), true
}

// ThroughputPlot draws delivered throughput — what the generator put into
// Kafka — and what the SUT processed (delivered less the lag's growth),
// each mean ± CI, against offered load, with the line where delivered
// equals offered: a SUT that keeps up has both on it, one that falls
// behind has its processed points below.
func ThroughputPlot(sums []ConfigSummary, rows []ResultRow) svgplot.Plot {
	p := svgplot.Plot{Title: "Delivered and processed vs offered throughput", XLabel: "offered load (events/s)", YLabel: "events/s", YFromZero: true,
		XPad: true}
	p.Series = meanLines(sums, results.ThroughputEPS, "delivered (generator into Kafka)")
	byRun := map[string]ResultRow{}
	for _, r := range rows {
		byRun[r.RunID] = r
	}
	var processed []ConfigSummary
	for _, s := range sums {
		var xs []float64
		for _, id := range s.RunIDs {
			if v, ok := processedEPS(byRun[id]); ok {
				xs = append(xs, v)
			}
		}
		if len(xs) > 0 {
			c := s
			c.Metrics = map[string]stats.Summary{"processed": stats.Describe(xs, DefaultLevel), results.OfferedRateEPS: s.Metrics[results.OfferedRateEPS]}
			processed = append(processed, c)
		}
	}
	for _, ln := range meanLines(processed, "processed", ProcessedName) {
		ln.Dash, ln.Shape, ln.ClampLo = true, "cross", true
		p.Series = append(p.Series, ln)
	}
	var xmax float64
	for _, s := range sums {
		xmax = math.Max(xmax, s.mean(results.OfferedRateEPS))
	}
	if xmax > 0 {
		p.Series = append(p.Series, svgplot.Series{Name: "delivered = offered", X: []float64{0, xmax}, Y: []float64{0, xmax}, Line: true, Dash: true,
			Color: "#000000", Width: 1})
	}
	p.Series = append(p.Series, repetitions(sums, rows, results.ThroughputEPS, func(ResultRow) bool { return true }))
	return p
}

// qualityColumns are the data-quality figures of the report's section, in
// order; a column none of the runs has is left out.
var qualityColumns = []struct{ metric, title, format string }{
	{results.QualityUncoveredS, "uncovered s", "%.2f"},
	{results.QualitySampleGaps, "gaps", "%.0f"},
	{results.QualityMaxGapS, "longest gap s", "%.2f"},
	{results.QualityBridgedEnergyJ, "bridged J", "%.3f"},
	{results.QualityLateS, "late s", "%.2f"},
	{results.QualityCounterResets, "counter resets", "%.0f"},
	{results.QualityAttributionResidualJ, "attribution residual J", "%.4f"},
	{results.QualityMixedSources, "mixed sources", "%.0f"},
	{results.QualityRecordedGapS, "recorded gap s", "%.2f"},
	{results.QualityCrossMeterResidualPct, "cross-meter residual %", "%.1f"},
	// Labelled as what it compares: RAPL sees the packages and DRAM, the
	// wattmeter the whole node at the wall.
	{results.QualityWattmeterRAPLResidualPct, "wattmeter − RAPL % of wattmeter (RAPL: packages + DRAM only; wattmeter: whole node at the wall)", "%.1f"},
}

// QualityTable is the data-quality section: per run, the figures above,
// the flags on the measurement and the caveats on derived figures.
func QualityTable(rows []ResultRow) (head []string, body [][]string) {
	var cols []int
	for i, c := range qualityColumns {
		for _, r := range rows {
			if _, ok := r.Metrics[c.metric]; ok {
				cols = append(cols, i)
				break
			}
		}
	}
	head = []string{"run", "state", "source"}
	for _, i := range cols {
		head = append(head, qualityColumns[i].title)
	}
	head = append(head, "data flags", "caveats")
	for _, r := range rows {
		source := "meter"
		switch {
		case r.Estimated:
			source = "estimated (model)"
		case len(r.Metrics) == 0:
			source = "-" // not analysed (failed before)
		}
		cells := []string{runcharts.ShortRun(r.RunID), r.State, source}
		for _, i := range cols {
			c := qualityColumns[i]
			cell := "-"
			if v, ok := r.Metrics[c.metric]; ok {
				cell = fmt.Sprintf(c.format, v)
			}
			cells = append(cells, cell)
		}
		var caveats []string
		for _, f := range r.Flags {
			if results.Caveat(f) {
				caveats = append(caveats, f)
			}
		}
		cells = append(cells, FlagList(results.DataQuality(r.Flags)), FlagList(caveats))
		body = append(body, cells)
	}
	return head, body
}
