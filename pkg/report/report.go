package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// ProvenanceRows lays provenance out for the report: one labelled row per
// fact, JSON values compact, every gap said.
func ProvenanceRows(p results.Provenance) [][2]string {
	compact := func(raw []byte) string {
		var b bytes.Buffer
		if len(raw) == 0 || json.Compact(&b, raw) != nil {
			return "not recorded"
		}
		return b.String()
	}
	commit := p.Commit
	if p.CommitSource != "" {
		commit += " (from the " + p.CommitSource + ")"
	}
	if p.CommitNote != "" {
		commit += " — " + p.CommitNote
	}
	out := [][2]string{{"spec hash", p.SpecHash}, {"greenflow version", p.GreenflowVersion}, {"commit", commit},
		{"seed", strconv.FormatInt(p.Seed, 10)}, {"machine (scheduler)", compact(p.Machine)}}
	for _, m := range p.Meters {
		v := "requested " + setOnly(m.Requested)
		if len(m.Effective) > 0 {
			v += "; effective " + compact(m.Effective)
		} else if m.EffectiveNote != "" {
			v += "; effective " + m.EffectiveNote
		}
		out = append(out, [2]string{"meters of config " + ShortHash(m.ConfigHash), v})
	}
	if tb := p.Testbed; tb != nil {
		out = append(out, TestbedRows(*tb)...)
	}
	for _, x := range p.Missing {
		out = append(out, [2]string{"missing", x})
	}
	return out
}

// TestbedRows lays out the reservation an experiment ran on: the job,
// its time, and the nodes of each pool.
func TestbedRows(tb results.TestbedProvenance) [][2]string {
	job := fmt.Sprintf("%s reservation %s, job %s (%s) on %s/%s", tb.Backend, tb.Reservation, tb.JobID, tb.ID, tb.Site, tb.Cluster)
	when := fmt.Sprintf("walltime %s: from %s, ends %s, released by %s", tb.Walltime, tb.StartedAt.Format(time.RFC3339),
		tb.EndsAt.Format(time.RFC3339), tb.ReleaseBy.Format(time.RFC3339))
	out := [][2]string{{"testbed", job}, {"testbed time", when}}
	byRole := map[string][]string{}
	var roles []string
	for _, n := range tb.Nodes {
		if _, ok := byRole[n.Role]; !ok {
			roles = append(roles, n.Role)
		}
		h := n.Host
		switch {
		case n.Wattmeter == nil:
			h += " (wattmeter unknown)"
		case *n.Wattmeter:
			h += " (wattmeter)"
		}
		byRole[n.Role] = append(byRole[n.Role], h)
	}
	for _, r := range roles {
		out = append(out, [2]string{"testbed pool " + r, strings.Join(byRole[r], ", ")})
	}
	return out
}

// numberCell matches a cell that is a number: "179.9", "179.9 ± 1.2 !",
// "-0.25 ‡", "1.5e+07".
var numberCell = regexp.MustCompile(`^[-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?%?( [±/] [-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?%?)?( [!‡*])*$`)

// tableCell renders one table cell: a number never breaks ("179.9 / 1"
// was once a number broken in two); text breaks at spaces and after the
// separators of ids and lists (",", ";", "/", "_"), never inside a token —
// a table too wide for the page scrolls instead. No negative zero.
func tableCell(s string) template.HTML {
	s = svgplot.NoNegZero(s)
	if s == "-" || len(s) <= 12 || numberCell.MatchString(s) {
		return template.HTML("<td>" + template.HTMLEscapeString(s) + "</td>")
	}
	var b strings.Builder
	for _, r := range s {
		b.WriteString(template.HTMLEscapeString(string(r)))
		if r == ',' || r == ';' || r == '/' || r == '_' {
			b.WriteString("<wbr>")
		}
	}
	return template.HTML(`<td class="txt">` + b.String() + "</td>")
}

// NotSetNote stands for a meters section the spec left empty.
const NotSetNote = "(not set: the collector's profile)"

// setOnly is a spec section as the spec set it: the stored JSON carries
// every field, zero where the spec said nothing ({"model":{"idleWatts":0,
// "maxWatts":0}} for no model), so zeros, empty strings, nulls and what is
// empty once they are gone are left out; an empty section is notSetNote.
func setOnly(raw []byte) string {
	if len(raw) == 0 {
		return "not recorded"
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "not recorded"
	}
	v, ok := pruneZero(v)
	if !ok {
		return NotSetNote
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "not recorded"
	}
	return string(b)
}

// pruneZero drops the zero values from decoded JSON; ok is false when
// nothing is left.
func pruneZero(v any) (any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, false
	case float64:
		return x, x != 0
	case string:
		return x, x != ""
	case map[string]any:
		for k, e := range x {
			if e, ok := pruneZero(e); ok {
				x[k] = e
			} else {
				delete(x, k)
			}
		}
		return x, len(x) > 0
	case []any:
		var out []any
		for _, e := range x {
			if e, ok := pruneZero(e); ok {
				out = append(out, e)
			}
		}
		return out, len(out) > 0
	}
	return v, true
}

// appendOnce appends s to list unless it is there.
func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// reportData feeds the page template.
type reportData struct {
	ID, Name, State, Created, Version, Commit string
	Runs                                      int
	Estimated                                 bool
	Level, CVThreshold                        float64
	SummaryHead                               []string
	Summary                                   [][]string
	LoadPlots                                 []template.HTML
	Pareto                                    template.HTML
	ParetoNote                                string
	PowerPlots                                []template.HTML
	PowerNote                                 string
	// Throughput is delivered against offered load; LagPlots each plotted
	// run's consumer lag against the SLO.
	Throughput template.HTML
	LagPlots   []template.HTML
	// EstimatedWhich says which runs are estimated: "any run" or "some runs".
	EstimatedWhich string
	// Capacity is a capacity search's answer, when the experiment ran one.
	Capacity string
	// QualityHead and QualityRows are the data-quality section.
	QualityHead []string
	QualityRows [][]string
	// Provenance is what the results were produced from, as label/value
	// rows.
	Provenance [][2]string
	// SummaryNotes explain marked intervals (crossing zero), RunNotes the
	// flags that change how a run's figures read.
	SummaryNotes, RunNotes []string
	RunHead                []string
	RunRows                [][]string
	Generated              string
}

// Report renders an experiment as one self-contained HTML page.
func Report(ctx context.Context, st *store.Store, experimentID string, maxRuns int) ([]byte, error) {
	e, err := loadExperiment(ctx, st, experimentID)
	if err != nil {
		return nil, err
	}
	rows := e.rows
	d := reportData{ID: experimentID, Runs: len(rows), Level: DefaultLevel, CVThreshold: DefaultCVThreshold,
		Generated: time.Now().UTC().Format(time.RFC3339)}
	if e, err := st.GetExperiment(ctx, experimentID); err == nil {
		d.Name, d.State, d.Version, d.Commit = e.Name, e.State, e.GreenflowVersion, e.GitCommit
		if e.CreatedMs > 0 {
			d.Created = time.UnixMilli(e.CreatedMs).UTC().Format(time.RFC3339)
		}
	}
	prov, err := st.Provenance(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	d.Provenance = ProvenanceRows(prov)
	sums := SummarizeRuns(rows, DefaultLevel)
	d.Estimated, d.EstimatedWhich = estimatedWhich(rows)
	d.SummaryHead, d.Summary, d.SummaryNotes = summaryTable(sums)
	sums = measuredOnly(sums) // the plots draw configurations with done runs
	for _, m := range []struct{ metric, title string }{
		{results.SUTMicroJPerEvent, "SUT energy per event vs offered load"},
		{results.NodeMicroJPerEvent, "Node energy per event vs offered load"},
	} {
		d.LoadPlots = append(d.LoadPlots, template.HTML(LoadPlot(sums, rows, m.metric, m.title).SVG()))
	}
	d.Throughput = template.HTML(ThroughputPlot(sums, rows).SVG())
	pp, note := ParetoPlot(sums)
	d.Pareto, d.ParetoNote = template.HTML(pp.SVG()), note
	if d.PowerPlots, d.LagPlots, d.PowerNote, err = runPlots(ctx, st, e, maxRuns); err != nil {
		return nil, err
	}
	d.QualityHead, d.QualityRows = QualityTable(rows)
	var capacity bytes.Buffer
	if err := WriteCapacity(ctx, &capacity, st, experimentID); err != nil {
		return nil, err
	}
	d.Capacity = strings.TrimSpace(capacity.String())
	d.RunHead, d.RunRows = RunTable(rows)
	for _, f := range explainedFlags(rows) {
		d.RunNotes = appendOnce(d.RunNotes, f.Name+": "+f.Help)
	}
	var buf bytes.Buffer
	if err := reportPage.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("render report: %w", err)
	}
	return buf.Bytes(), nil
}

// estimatedWhich says whether any run's energy is estimated, and whether
// it is every run's ("any run") or only "some runs".
func estimatedWhich(rows []ResultRow) (bool, string) {
	n := 0
	for _, r := range rows {
		if r.Estimated {
			n++
		}
	}
	if n == len(rows) {
		return n > 0, "any run"
	}
	return n > 0, "some runs"
}

// summaryTable is the per-configuration table: the headline metrics as
// mean ± CI, marked ‡ (with the note) where an interval crosses zero.
func summaryTable(sums []ConfigSummary) (head []string, body [][]string, notes []string) {
	head = []string{"config", "factors", "n", "failed"}
	for _, c := range summaryColumns {
		head = append(head, c.title)
	}
	head = append(head, "lag SLO", "Pareto")
	for _, s := range sums {
		cells := []string{ShortHash(s.ConfigHash), runcharts.Factors(s.Factors), fmt.Sprint(len(s.RunIDs)), fmt.Sprint(s.Failed)}
		if !s.Measured() {
			notes = appendOnce(notes, fmt.Sprintf("%s (%s): no done run — %s", ShortHash(s.ConfigHash), runcharts.Factors(s.Factors), failureWords(s)))
		}
		for _, c := range summaryColumns {
			cell := meanCI(s.Metrics[c.metric], c.format, DefaultCVThreshold)
			if compare.CrossesZero(c.metric, s.Metrics[c.metric]) {
				cell += " ‡"
				notes = appendOnce(notes, "‡ "+results.CICrossesZeroNote)
			}
			cells = append(cells, cell)
		}
		cells = append(cells, lagVerdict(s), map[bool]string{true: "yes", false: ""}[s.Pareto])
		body = append(body, cells)
	}
	return head, body, notes
}

// runPlots draws each plotted run's power over time — components ten times
// smaller than the largest again on a scale of their own — and its consumer
// lag: done runs, the first repetition of each configuration first, at most
// maxRuns of them (note says so when runs were left out).
func runPlots(ctx context.Context, st *store.Store, e experiment, maxRuns int) (power, lag []template.HTML, note string, err error) {
	order := make([]store.Run, len(e.runs))
	copy(order, e.runs)
	sort.SliceStable(order, func(i, j int) bool { return order[i].Repetition < order[j].Repetition })
	metricsOf := map[string]map[string]float64{}
	for _, r := range e.rows {
		metricsOf[r.RunID] = r.Metrics
	}
	plotted := 0
	for _, r := range order {
		if plotted >= maxRuns {
			break
		}
		if r.State != events.RunStateDone {
			continue
		}
		p, err := runcharts.Power(ctx, st, r, e.targets[r.RunID])
		if err != nil {
			return nil, nil, "", err
		}
		for _, plot := range runcharts.PowerPlots(p) {
			power = append(power, template.HTML(plot.SVG()))
		}
		lp, ok, err := runcharts.Lag(ctx, st, r, metricsOf[r.RunID])
		if err != nil {
			return nil, nil, "", err
		}
		if ok {
			lag = append(lag, template.HTML(lp.SVG()))
		}
		plotted++
	}
	if n := countDone(e.rows); n > plotted {
		note = fmt.Sprintf("Power plots for %d of %d done runs (--max-runs).", plotted, n)
	}
	return power, lag, note, nil
}

// RunTable is the runs table: one row a run, with its state and reason.
func RunTable(rows []ResultRow) (head []string, body [][]string) {
	head = []string{"run", "rep", "config", "factors", "state", "window s", "events/s", "SUT J", "node J", "SUT µJ/event", "lag slope msg/s",
		"lag SLO", "gaps", "estimated", "flags"}
	for _, r := range rows {
		metric := func(name, format string) string {
			v, ok := r.Metrics[name]
			if !ok {
				return "-"
			}
			return fmt.Sprintf(format, v)
		}
		state := r.State
		if r.Reason != "" {
			state += ": " + r.Reason
		}
		body = append(body, []string{runcharts.ShortRun(r.RunID), fmt.Sprint(r.Repetition), ShortHash(r.ConfigHash), runcharts.Factors(r.Factors), state,
			metric(results.DurationS, "%.1f"), metric(results.ThroughputEPS, "%.0f"), metric(results.SUTEnergyJ, "%.3f"), metric(results.NodeEnergyJ, "%.2f"),
			metric(results.SUTMicroJPerEvent, "%.1f"), metric(results.LagTrendSlope, "%.1f"), runLagSLO(r), metric(results.QualitySampleGaps, "%.0f"),
			map[bool]string{true: "yes", false: ""}[r.Estimated], FlagList(r.Flags)})
	}
	return head, body
}

func countDone(rows []ResultRow) int {
	n := 0
	for _, r := range rows {
		if r.State == events.RunStateDone {
			n++
		}
	}
	return n
}

// loadFactor reports whether a factor sets the offered load (the x axis of
// the load plots); the other factors split configurations into lines.
func loadFactor(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "sensors") || strings.Contains(n, "periodms") || strings.Contains(n, "rate")
}

func sortSeriesByX(s *svgplot.Series) {
	idx := make([]int, len(s.X))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return s.X[idx[a]] < s.X[idx[b]] })
	pick := func(v []float64) []float64 {
		if len(v) != len(idx) {
			return v // not set for this series
		}
		out := make([]float64, len(idx))
		for i, j := range idx {
			out[i] = v[j]
		}
		return out
	}
	s.X, s.Y, s.Lo, s.Hi = pick(s.X), pick(s.Y), pick(s.Lo), pick(s.Hi)
}

// ParetoPlot scatters each configuration's mean throughput against its mean
// SUT energy per event and draws the front — the summary's, among the
// configurations that met the lag SLO, as the table marks it. Those that
// failed it are crosses off the front: their throughput was not sustained
// and their µJ/event counts events the SUT did not process, so they would
// otherwise look best.
func ParetoPlot(sums []ConfigSummary) (svgplot.Plot, string) {
	p := svgplot.Plot{Title: "Throughput vs SUT energy per event (Pareto front)", XLabel: "throughput (events/s)", YLabel: "SUT µJ per event", YFromZero: true, XPad: true}
	all := svgplot.Series{Name: "configurations", Marker: true, Color: "#999999", ClampLo: true}
	bad := svgplot.Series{Name: LagSLOFailedName, Marker: true, Color: "#B00020", Shape: "cross", ClampLo: true}
	front := svgplot.Series{Name: "Pareto front", Marker: true, Line: true, Color: "#D55E00", Width: 2}
	var names []string
	for _, s := range sums {
		m := s.Metrics[results.SUTMicroJPerEvent]
		to := &all
		if lagVerdict(s) == "FAIL" {
			to = &bad
		}
		to.X = append(to.X, s.mean(results.ThroughputEPS))
		to.Y = append(to.Y, m.Mean)
		to.Lo = append(to.Lo, m.CILow)
		to.Hi = append(to.Hi, m.CIHigh)
		to.Labels = append(to.Labels, runcharts.Factors(s.Factors))
		if s.Pareto {
			front.X = append(front.X, s.mean(results.ThroughputEPS))
			front.Y = append(front.Y, m.Mean)
			names = append(names, runcharts.Factors(s.Factors))
		}
	}
	sortSeriesByX(&front)
	p.Series = []svgplot.Series{all, front}
	if len(bad.X) > 0 {
		p.Series = append(p.Series, bad)
	}
	note := "Front (more events/s and fewer µJ/event than any other configuration that met the lag SLO in one of the two): " +
		strings.Join(names, "; ")
	switch {
	case len(sums) == 0:
		note = "No configuration has a done run: there is nothing to compare."
	case len(sums) == 1:
		note = "One configuration: there is no trade-off to show."
	case len(names) == 0:
		note = "No configuration met the lag SLO: none is on the front."
	}
	return p, note
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":  func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) },
	"cell": tableCell,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>GreenFlow report {{.ID}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222;line-height:1.4}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{padding:3px 6px;border-bottom:1px solid #e5e5e5;text-align:right}
th{background:#f4f4f4} td:nth-child(2),th:nth-child(2){text-align:left} td{white-space:nowrap}
td.txt{white-space:normal;text-align:left;min-width:7em} .scroll{overflow-x:auto}
.meta{color:#555;font-size:13px} .note{color:#555;font-size:12px} svg{display:block;margin:10px 0}
</style></head><body>
<h1>GreenFlow experiment {{.ID}}</h1>
<div class="meta">{{if .Name}}name {{.Name}} · {{end}}{{if .State}}state {{.State}} · {{end}}{{.Runs}} runs{{if .Created}} · created {{.Created}}{{end}}{{if .Version}} · greenflow {{.Version}}{{end}}{{if .Commit}} ({{.Commit}}){{end}} · report generated {{.Generated}}</div>
{{if .Estimated}}<p class="note"><b>Estimated:</b> no hardware energy counter was readable for {{.EstimatedWhich}}; their energy comes from a power model (the node's profile, or one calibrated on a metered node — see Provenance).</p>{{end}}

{{if .Capacity}}<h2>Capacity</h2>
<p>{{.Capacity}}</p>
<p class="note">The largest offered load the search found sustained: throughput at least slos.minThroughputRatio of the offered load and the lag trend's interval below the SLO's limit; probes whose interval held the limit were repeated with a longer window (see the runs below).</p>
{{end}}
<h2>Per configuration</h2>
<p class="note">Mean ± {{pct .Level}} confidence-interval half-width (Student t over repetitions); "!" marks a coefficient of variation above {{pct .CVThreshold}}. Lag SLO: Theodolite's lag-trend check on the median slope of the repetitions.</p>
<div class="scroll"><table><tr>{{range .SummaryHead}}<th>{{.}}</th>{{end}}</tr>
{{range .Summary}}<tr>{{range .}}{{cell .}}{{end}}</tr>{{end}}</table></div>
{{range .SummaryNotes}}<p class="note">{{.}}</p>{{end}}

<h2>Energy per event vs load</h2>
{{range .LoadPlots}}{{.}}{{end}}
<p class="note">Error bars: {{pct .Level}} confidence intervals of the mean over repetitions (none with one repetition). Lines join configurations that differ only in load. An interval reaching below zero is drawn to 0 and ends in an arrow marked ‡ (as in the table). Crosses, off the lines: runs and configurations that failed the lag SLO — the SUT fell behind, so their energy per event divides by events put into Kafka that it never processed and is not comparable with the rest.</p>

<h2>Throughput: did the system keep up?</h2>
{{.Throughput}}
<p class="note">Delivered: events per second the load generator put into Kafka in the measured window (mean ± {{pct .Level}} CI; grey: each repetition) against the offered load. Processed (estimated from lag growth): delivered less the consumer lag's fitted trend, at least 0 — what the SUT kept up with. On the dashed line the system handles what is offered; processed points below it mean the SUT fell behind.</p>

<h2>Pareto front</h2>
{{.Pareto}}
<p class="note">{{.ParetoNote}}</p>

<h2>Power over time</h2>
<p class="note">Mean power per component in time buckets: node totals (heavy), the run's roles, other processes and the unattributed rest (dashed). Components under a tenth of the largest are drawn again on a scale of their own, below. Shaded: the run's recorded phases; 0 s is the start of the measurement window.</p>
{{range .PowerPlots}}{{.}}{{end}}
{{if .PowerNote}}<p class="note">{{.PowerNote}}</p>{{end}}

<h2>Consumer lag</h2>
<p class="note">The consumer group's lag summed over partitions during the measured window. Dashed from where the fit starts (the load's start plus the SLO's warm-up; shaded before): the trend the analyzer fitted, and the largest trend the lag-trend SLO allows. A run meets the SLO when its trend stays below the limit.</p>
{{range .LagPlots}}{{.}}{{else}}<p class="note">No lag series was recorded (the load generator samples it with --record-kafka-signals).</p>{{end}}

<h2>Data quality</h2>
<p class="note">Per run: how much of the window no sample covered, gaps bridged and the energy in them, samples that arrived late, counter resets, the attribution residual (node total minus its parts), the gaps the collectors recorded, the difference between two meters of one node, and the flags — on the measurement (data flags) and on derived figures (caveats). Explanations below the runs table.</p>
<div class="scroll"><table><tr>{{range .QualityHead}}<th>{{.}}</th>{{end}}</tr>
{{range .QualityRows}}<tr>{{range .}}{{cell .}}{{end}}</tr>{{end}}</table></div>

<h2>Provenance</h2>
<div class="scroll"><table>{{range .Provenance}}<tr><th style="text-align:left">{{index . 0}}</th>{{cell (index . 1)}}</tr>{{end}}</table></div>
<p class="note">The resolved spec is in <code>greenflow export</code>'s provenance.json and the results API.</p>

<h2>Runs</h2>
<div class="scroll"><table><tr>{{range .RunHead}}<th>{{.}}</th>{{end}}</tr>
{{range .RunRows}}<tr>{{range .}}{{cell .}}{{end}}</tr>{{end}}</table></div>
{{range .RunNotes}}<p class="note">{{.}}</p>{{end}}
</body></html>
`))
