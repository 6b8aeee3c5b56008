package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/svgplot"
)

// One comparison model for every format and any number of arguments: the
// arguments' groups are matched into sets of like configurations (the
// same factor values) — or, when each argument names one configuration,
// compared as named — each group of a set is tested against the set's
// baseline (the first argument's) with Welch's t-test per headline
// metric, and a metric's p-values are Holm-adjusted together over every
// comparison of every set, so that a difference marked among many is as
// trustworthy as one between two. Configurations only one argument ran
// are listed as not compared, never dropped. Table, CSV, JSON and the plot
// are renderings of the one Compared value.

// CompareMany compares groups as named, each against the first.
func CompareMany(groups []Group, level float64) []GroupStat {
	return named(groups).Stats(level)
}

// WriteCompareMany prints groups compared as named, each against the first.
func WriteCompareMany(w io.Writer, format string, groups []Group, level float64) error {
	return named(groups).Write(w, format, level)
}

// named is groups compared as named: one set, the first the baseline.
func named(groups []Group) Compared {
	sides := make([][]Group, len(groups))
	for i, g := range groups {
		sides[i] = []Group{g}
	}
	return MatchSides(sides)
}

// compareJSON is the JSON form of a comparison.
type compareJSON struct {
	Level     float64          `json:"level"`
	Sets      []compareSetJSON `json:"sets"`
	Unmatched []groupJSON      `json:"unmatched"`
	Rows      []GroupStat      `json:"rows"`
}

type compareSetJSON struct {
	Configuration string      `json:"configuration"`
	Baseline      string      `json:"baseline"`
	Groups        []groupJSON `json:"groups"`
}

type groupJSON struct {
	Letter     string            `json:"letter,omitempty"`
	Label      string            `json:"label"`
	Experiment string            `json:"experiment,omitempty"`
	ConfigHash string            `json:"config_hash,omitempty"`
	Factors    map[string]string `json:"factors"`
	RunIDs     []string          `json:"run_ids"`
	Note       string            `json:"note,omitempty"`
}

func toGroupJSON(g Group, letter, note string) groupJSON {
	return groupJSON{Letter: letter, Label: g.Label, Experiment: g.Experiment, ConfigHash: g.ConfigHash, Factors: g.Factors, RunIDs: g.RunIDs,
		Note: note}
}

// Write prints the comparison as one table per set, CSV or JSON — the same
// comparisons in each — and the configurations not compared.
func (c Compared) Write(w io.Writer, format string, level float64) error {
	rows := c.Stats(level)
	switch format {
	case "json":
		out := compareJSON{Level: level, Rows: rows, Unmatched: []groupJSON{}}
		gi := 0
		for _, s := range c.Sets {
			js := compareSetJSON{Configuration: s.Configuration, Baseline: s.Groups[0].Label}
			for _, g := range s.Groups {
				js.Groups = append(js.Groups, toGroupJSON(g, compare.Letter(gi), ""))
				gi++
			}
			out.Sets = append(out.Sets, js)
		}
		for _, g := range c.Unmatched {
			out.Unmatched = append(out.Unmatched, toGroupJSON(g, "", compare.UnmatchedNote))
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"configuration", "letter", "group", "baseline", "metric", "unit", "n", "mean", "ci_low", "ci_high", "ci_crosses_zero",
			"diff_pct", "p", "p_holm", "hedges_g", "significant", "note"})
		for _, r := range rows {
			_ = cw.Write([]string{r.Configuration, r.Letter, r.Group, r.Baseline, r.Metric, r.Unit, strconv.Itoa(r.N), csvPtr(r.Mean), csvPtr(r.CILow),
				csvPtr(r.CIHigh), report.CSVBool(r.CICrossesZero), csvPtr(r.DiffPct), csvPtr(r.P), csvPtr(r.PHolm), csvPtr(r.HedgesG), report.CSVBool(r.Significant), ""})
		}
		for _, g := range c.Unmatched {
			_ = cw.Write([]string{runcharts.Factors(g.Factors), "", g.Label, "", "", "", strconv.Itoa(len(g.RunIDs)), "", "", "", "", "", "", "", "", "",
				compare.UnmatchedNote})
		}
		cw.Flush()
		return cw.Error()
	case "table":
	default:
		return fmt.Errorf("--format %q: expected table, csv or json", format)
	}
	fmt.Fprintf(w, "Welch's t-test of each group against its configuration's baseline; mean ± %.0f%% CI half-width; p Holm-adjusted over "+
		"the %d comparisons of a metric; g = Hedges' g; * = adjusted p < %.2g\n", level*100, c.Comparisons(), 1-level)
	marked := false
	gi := 0
	for _, set := range c.Sets {
		fmt.Fprintln(w)
		switch set.Configuration {
		case "":
			fmt.Fprintln(w, "Configurations as named:")
		default:
			fmt.Fprintf(w, "Configuration %s:\n", set.Configuration)
		}
		first := compare.Letter(gi)
		for i, g := range set.Groups {
			role := "vs " + first
			if i == 0 {
				role = "baseline"
			}
			fmt.Fprintf(w, "  %s: %s (%d runs, %s)\n", compare.Letter(gi), g.Label, len(g.RunIDs), role)
			gi++
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "METRIC\tGROUP\tN\tMEAN\tvs %s %%\tp (Holm)\tg\t\t\n", first)
		for _, r := range rows {
			if r.Baseline != set.Groups[0].Label || r.Configuration != set.Configuration {
				continue
			}
			mean := "-"
			format := metricFormat(r.Metric)
			if r.Mean != nil {
				mean = fmt.Sprintf(format, *r.Mean)
				if r.CILow != nil {
					mean += " ± " + fmt.Sprintf(format, (*r.CIHigh-*r.CILow)/2)
					if r.CICrossesZero {
						mean += " ‡"
						marked = true
					}
				}
			}
			diff, p, g, mark := "", "", "", ""
			if r.Letter != first {
				diff, p, g = ptrNum(r.DiffPct, "%+.1f"), ptrNum(r.PHolm, "%.3g"), ptrNum(r.HedgesG, "%.2f")
				if r.Significant {
					mark = "*"
				}
			}
			fmt.Fprint(tw, svgplot.NoNegZero(fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Metric, r.Letter, r.N, mean, diff, p, g, mark)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(c.Unmatched) > 0 {
		fmt.Fprintf(w, "\nNot compared (%s):\n", strings.TrimPrefix(compare.UnmatchedNote, "not compared: "))
		for _, g := range c.Unmatched {
			fmt.Fprintf(w, "  %s (%d runs)\n", g.Label, len(g.RunIDs))
		}
	}
	if marked {
		_, err := fmt.Fprintln(w, "‡ "+results.CICrossesZeroNote)
		return err
	}
	return nil
}

// metricFormat is how a headline metric is printed.
func metricFormat(metric string) string {
	for _, m := range compare.Metrics {
		if m.Metric == metric {
			return m.Format
		}
	}
	return "%.3g"
}

// displayUnit spells a unit for people: µJ, not uJ.
func displayUnit(u string) string {
	if strings.HasPrefix(u, "uJ") {
		return "µJ" + strings.TrimPrefix(u, "uJ")
	}
	return u
}

// Plot is one metric of the compared groups side by side, set after set:
// each group's repetitions as points and its mean with the interval as an
// error bar, on a category axis of the groups' letters; the legend is the
// key — letter, the experiment's distinguishing part and the
// configuration — and a note lists what was not compared.
func (c Compared) Plot(metric string, level float64) (svgplot.Plot, error) {
	unit := displayUnit(results.Unit(metric))
	ylabel := metric
	if unit != "" {
		ylabel += " (" + unit + ")"
	}
	p := svgplot.Plot{Title: metric + " by group (mean ± " + strconv.Itoa(int(level*100)) + "% CI; dots: repetitions)",
		XLabel: "group (the first of each configuration is its baseline)", YLabel: ylabel, YFromZero: true}
	reps := svgplot.Series{Name: "repetitions", Marker: true, Color: "#999999"}
	short := shortExperimentIDs(c)
	found := false
	gi := 0
	x := 0.0
	for _, set := range c.Sets {
		for _, g := range set.Groups {
			x++
			l := compare.Letter(gi)
			gi++
			p.XCats = append(p.XCats, svgplot.CatTick{X: x, Label: l})
			xs := g.Values[metric]
			if len(xs) == 0 {
				continue
			}
			found = true
			d := stats.Describe(xs, level)
			p.Series = append(p.Series, svgplot.Series{Name: l + ": " + groupKey(g, short), X: []float64{x}, Y: []float64{d.Mean},
				Lo: []float64{d.CILow}, Hi: []float64{d.CIHigh}, Marker: true, ClampLo: results.Positive(metric)})
			for j, v := range xs {
				// Spread the repetitions a little beside the mean, in run order.
				reps.X = append(reps.X, x+0.12+0.04*float64(j%5))
				reps.Y = append(reps.Y, v)
			}
		}
		x += 0.5 // a gap between configurations
	}
	if !found {
		return svgplot.Plot{}, fmt.Errorf("no group has %s", metric)
	}
	p.Series = append(p.Series, reps)
	for _, g := range c.Unmatched {
		p.Notes = append(p.Notes, "Not compared (no other argument ran it): "+groupKey(g, short))
	}
	return p, nil
}

// PlotSVG is Plot as a standalone SVG document.
func (c Compared) PlotSVG(metric string, level float64) (string, error) {
	p, err := c.Plot(metric, level)
	if err != nil {
		return "", err
	}
	return p.SVG(), nil
}

// ComparePlot plots groups compared as named.
func ComparePlot(groups []Group, metric string, level float64) (svgplot.Plot, error) {
	return named(groups).Plot(metric, level)
}

// ComparePlotSVG is ComparePlot as a standalone SVG document.
func ComparePlotSVG(groups []Group, metric string, level float64) (string, error) {
	return named(groups).PlotSVG(metric, level)
}

// groupKey names a group in a plot's key: the experiment's distinguishing
// part (when the groups come from more than one) and the configuration —
// the short config hash and factors — or the label when it has neither.
func groupKey(g Group, short map[string]string) string {
	var parts []string
	if s := short[g.Experiment]; s != "" {
		parts = append(parts, s)
	}
	if g.ConfigHash != "" {
		parts = append(parts, report.ShortHash(g.ConfigHash))
	}
	if f := runcharts.Factors(g.Factors); f != "-" {
		parts = append(parts, strings.ReplaceAll(f, ",", ", "))
	}
	if len(parts) == 0 {
		return g.Label
	}
	return strings.Join(parts, " ")
}

// shortExperimentIDs maps each experiment of a comparison to the part of
// its id that tells it from the others: ids of one name
// (uc3-local-demo-20261130-101500-a1b2, …) differ only in time and suffix,
// which a legend cut at its width would hide. One experiment needs none.
func shortExperimentIDs(c Compared) map[string]string {
	var ids []string
	seen := map[string]bool{}
	for _, g := range append(c.Groups(), c.Unmatched...) {
		if g.Experiment != "" && !seen[g.Experiment] {
			seen[g.Experiment] = true
			ids = append(ids, g.Experiment)
		}
	}
	out := map[string]string{}
	if len(ids) < 2 {
		return out
	}
	split := make([][]string, len(ids))
	common := -1
	for i, id := range ids {
		split[i] = strings.Split(id, "-")
		if common < 0 || len(split[i])-1 < common {
			common = len(split[i]) - 1 // keep at least the last part
		}
	}
	for k := 0; k < common; k++ {
		same := true
		for _, s := range split[1:] {
			same = same && s[k] == split[0][k]
		}
		if !same {
			common = k
			break
		}
	}
	for i, id := range ids {
		out[id] = strings.Join(split[i][common:], "-")
	}
	return out
}

func ptrNum(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

func csvPtr(v *float64) string {
	if v == nil {
		return ""
	}
	return report.CSVFloat(*v)
}

// groupLabel shortens a label of factors for the legend.
func groupLabel(exp, configHash string, f map[string]string) string {
	var parts []string
	if exp != "" {
		parts = append(parts, exp)
	}
	if configHash != "" {
		parts = append(parts, report.ShortHash(configHash))
	}
	if s := runcharts.Factors(f); s != "-" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
