package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
)

// Comparing more than two groups — experiments, or configurations of one
// or several experiments — at once: the first group is the baseline, each
// other is tested against it with Welch's t-test per headline metric, and
// the p-values of a metric are Holm-adjusted together, so that a difference
// marked among k groups is as trustworthy as one between two.

// GroupStat is one group's figures for one metric, against the baseline.
type GroupStat struct {
	Metric string `json:"metric"`
	Unit   string `json:"unit,omitempty"`
	Group  string `json:"group"`
	N      int    `json:"n"`
	// Mean and the interval at the comparison's level (null where one run
	// cannot tell).
	Mean   *float64 `json:"mean"`
	CILow  *float64 `json:"ci_low"`
	CIHigh *float64 `json:"ci_high"`
	// Against the baseline (null for the baseline itself): the difference
	// of means in % of the baseline's, Welch's p and its Holm adjustment
	// over the metric's comparisons, and Hedges' g.
	DiffPct     *float64  `json:"diff_pct"`
	P           *float64  `json:"p"`
	PHolm       *float64  `json:"p_holm"`
	HedgesG     *float64  `json:"hedges_g"`
	Significant bool      `json:"significant"`
	Values      []float64 `json:"values"` // the repetitions
	// CICrossesZero: the interval reaches below zero for a quantity that
	// cannot be negative (results.CICrossesZero).
	CICrossesZero bool `json:"ci_crosses_zero"`
}

// CompareMany computes every headline metric of every group against the
// first, in metric then group order.
func CompareMany(groups []Group, level float64) []GroupStat {
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	var out []GroupStat
	for _, m := range compareMetrics {
		base := groups[0].Values[m.metric]
		if len(base) == 0 {
			continue
		}
		var ps []float64
		start := len(out)
		for gi, g := range groups {
			xs := g.Values[m.metric]
			if len(xs) == 0 {
				continue
			}
			d := stats.Describe(xs, level)
			s := GroupStat{Metric: m.metric, Unit: results.Unit(m.metric), Group: g.Label, N: d.N, Mean: num(d.Mean), CILow: num(d.CILow),
				CIHigh: num(d.CIHigh), Values: xs, CICrossesZero: crossesZero(m.metric, d)}
			p := math.NaN()
			if gi > 0 {
				w := stats.Welch(xs, base, level)
				p = w.P
				s.P, s.HedgesG = num(w.P), num(stats.HedgesG(xs, base))
				if bm := stats.Mean(base); bm != 0 {
					s.DiffPct = num((d.Mean - bm) / math.Abs(bm) * 100)
				}
			}
			ps = append(ps, p)
			out = append(out, s)
		}
		for i, p := range stats.Holm(ps) {
			s := &out[start+i]
			s.PHolm = num(p)
			s.Significant = !math.IsNaN(p) && p < 1-level
		}
	}
	return out
}

// WriteCompareMany prints the comparison as one table (a row per metric
// and group), CSV or JSON.
func WriteCompareMany(w io.Writer, format string, groups []Group, level float64) error {
	rows := CompareMany(groups, level)
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Level    float64     `json:"level"`
			Baseline string      `json:"baseline"`
			Rows     []GroupStat `json:"rows"`
		}{level, groups[0].Label, rows})
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"metric", "unit", "group", "n", "mean", "ci_low", "ci_high", "ci_crosses_zero", "diff_pct", "p", "p_holm", "hedges_g",
			"significant"})
		for _, r := range rows {
			_ = cw.Write([]string{r.Metric, r.Unit, r.Group, strconv.Itoa(r.N), csvPtr(r.Mean), csvPtr(r.CILow), csvPtr(r.CIHigh),
				csvBool(r.CICrossesZero), csvPtr(r.DiffPct),
				csvPtr(r.P), csvPtr(r.PHolm), csvPtr(r.HedgesG), csvBool(r.Significant)})
		}
		cw.Flush()
		return cw.Error()
	case "table":
	default:
		return fmt.Errorf("--format %q: expected table, csv or json", format)
	}
	for i, g := range groups {
		role := "vs " + letter(0)
		if i == 0 {
			role = "baseline"
		}
		fmt.Fprintf(w, "%s: %s (%d runs, %s)\n", letter(i), g.Label, len(g.RunIDs), role)
	}
	fmt.Fprintf(w, "Welch's t-test of each group against A; mean ± %.0f%% CI half-width; p Holm-adjusted over the %d comparisons of a metric; "+
		"g = Hedges' g; * = adjusted p < %.2g\n", level*100, len(groups)-1, 1-level)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "METRIC\tGROUP\tN\tMEAN\tvs A %\tp (Holm)\tg\t\t")
	index := map[string]int{}
	for i, g := range groups {
		index[g.Label] = i
	}
	format = "%.3g"
	marked := false
	for _, r := range rows {
		for _, m := range compareMetrics {
			if m.metric == r.Metric {
				format = m.format
			}
		}
		mean := "-"
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
		if index[r.Group] > 0 {
			diff, p, g = ptrNum(r.DiffPct, "%+.1f"), ptrNum(r.PHolm, "%.3g"), ptrNum(r.HedgesG, "%.2f")
			if r.Significant {
				mark = "*"
			}
		}
		fmt.Fprint(tw, noNegZero(fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Metric, letter(index[r.Group]), r.N, mean, diff, p, g, mark)))
	}
	return flushMarked(tw, w, marked)
}

// ComparePlot is one metric of the groups side by side: each group's
// repetitions as points and its mean with the interval as an error bar.
func ComparePlot(groups []Group, metric string, level float64) (plot, error) {
	p := plot{Title: metric + " by group (mean ± " + strconv.Itoa(int(level*100)) + "% CI; dots: repetitions)",
		XLabel: "group (A is the baseline)", YLabel: metric + " [" + results.Unit(metric) + "]", YFromZero: true, XPad: true}
	reps := series{Name: "repetitions", Marker: true, Color: "#999999"}
	found := false
	for i, g := range groups {
		xs := g.Values[metric]
		if len(xs) == 0 {
			continue
		}
		found = true
		d := stats.Describe(xs, level)
		x := float64(i + 1)
		p.Series = append(p.Series, series{Name: letter(i) + ": " + g.Label, X: []float64{x}, Y: []float64{d.Mean}, Lo: []float64{d.CILow},
			Hi: []float64{d.CIHigh}, Marker: true, Labels: []string{letter(i)}, ClampLo: results.Positive(metric)})
		for j, v := range xs {
			// Spread the repetitions a little beside the mean, in run order.
			reps.X = append(reps.X, x+0.12+0.04*float64(j%5))
			reps.Y = append(reps.Y, v)
		}
	}
	if !found {
		return plot{}, fmt.Errorf("no group has %s", metric)
	}
	p.Series = append(p.Series, reps)
	return p, nil
}

// ComparePlotSVG is ComparePlot as a standalone SVG document.
func ComparePlotSVG(groups []Group, metric string, level float64) (string, error) {
	p, err := ComparePlot(groups, metric, level)
	if err != nil {
		return "", err
	}
	return p.SVG(), nil
}

// letter names the i-th group: A, B, …, Z, AA, AB, …
func letter(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('A'+(i-1)%26)) + s
	}
	return s
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
	return csvFloat(*v)
}

// groupLabel shortens a label of factors for the legend.
func groupLabel(exp, configHash string, f map[string]string) string {
	var parts []string
	if exp != "" {
		parts = append(parts, exp)
	}
	if configHash != "" {
		parts = append(parts, shortHash(configHash))
	}
	if s := factors(f); s != "-" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
