// Package compare is the statistics of `greenflow compare`, shared with the
// web console: the runs of each configuration of each experiment are a
// group; groups are matched into sets of like configurations (the same
// factor values) — or compared as named when each argument names one —
// each group tested against its set's baseline (the first) with Welch's
// t-test per headline metric, a metric's p-values Holm-adjusted together
// over every comparison, so a difference marked among many is as
// trustworthy as one between two.
package compare

import (
	"math"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/stats"
)

// Run is one run's results as a comparison reads them.
type Run struct {
	RunID      string
	ConfigHash string
	Factors    map[string]string
	Metrics    map[string]float64
}

// Metrics are the headline metrics compared, in print order.
var Metrics = []struct{ Metric, Format string }{
	{results.ThroughputEPS, "%.1f"},
	{results.SUTEnergyJ, "%.3f"},
	{results.NodeEnergyJ, "%.2f"},
	{results.SUTMeanPowerW, "%.3f"},
	{results.NodeMeanPowerW, "%.3f"},
	{results.SUTMicroJPerEvent, "%.2f"},
	{results.NodeMicroJPerEvent, "%.2f"},
	{results.SUTDynamicMicroJPerEvent, "%.2f"},
	{results.EventsPerJoule, "%.1f"},
	{results.SUTJoulePerMB, "%.2f"},
	{results.LagTrendSlope, "%.1f"},
}

// Group is the runs of one configuration of one experiment in a
// comparison: the values of each metric over its runs.
type Group struct {
	Label  string
	RunIDs []string
	Values map[string][]float64
	// Experiment and Factors say which experiment and configuration the
	// runs are (the factors are what like-with-like matching compares).
	Experiment string
	ConfigHash string
	Factors    map[string]string
}

// NewGroup collects the metrics of rows under label.
func NewGroup(label string, rows []Run) Group {
	g := Group{Label: label, Values: map[string][]float64{}}
	if len(rows) > 0 {
		g.Factors, g.ConfigHash = rows[0].Factors, rows[0].ConfigHash
	}
	for _, r := range rows {
		if r.ConfigHash != g.ConfigHash {
			g.ConfigHash = ""
		}
		g.RunIDs = append(g.RunIDs, r.RunID)
		for m, v := range r.Metrics {
			g.Values[m] = append(g.Values[m], v)
		}
	}
	return g
}

// CompareSet is groups of one configuration compared: the first is the
// baseline.
type CompareSet struct {
	// Configuration is the factor values the groups share ("" when the
	// groups were named one each and differ).
	Configuration string
	Groups        []Group
}

// Compared is the comparisons of a compare call.
type Compared struct {
	Sets []CompareSet
	// Unmatched are the configurations no other argument ran.
	Unmatched []Group
}

// UnmatchedNote says why a group is listed but not compared.
const UnmatchedNote = "not compared: no other argument ran this configuration"

// MatchSides builds the comparisons of the arguments' groups (sides[i] is
// what argument i named). When every argument names one configuration,
// they are one set, compared as named; otherwise each configuration
// (factor values) two or more arguments ran is a set, in the arguments'
// order, and the rest are unmatched.
func MatchSides(sides [][]Group) Compared {
	single := true
	for _, side := range sides {
		single = single && len(side) == 1
	}
	if single {
		set := CompareSet{}
		for i, side := range sides {
			set.Groups = append(set.Groups, side[0])
			if k := runcharts.Factors(side[0].Factors); i == 0 {
				set.Configuration = k
			} else if k != set.Configuration {
				set.Configuration = ""
			}
		}
		return Compared{Sets: []CompareSet{set}}
	}
	byKey := map[string][]Group{}
	var keys []string
	for _, side := range sides {
		for _, g := range side {
			k := runcharts.Factors(g.Factors)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], g)
		}
	}
	var out Compared
	for _, k := range keys {
		if gs := byKey[k]; len(gs) >= 2 {
			out.Sets = append(out.Sets, CompareSet{Configuration: k, Groups: gs})
		} else {
			out.Unmatched = append(out.Unmatched, gs[0])
		}
	}
	return out
}

// Groups lists the compared groups, set after set: a group's letter is
// its index here, the same in the table, CSV, JSON and plot.
func (c Compared) Groups() []Group {
	var out []Group
	for _, s := range c.Sets {
		out = append(out, s.Groups...)
	}
	return out
}

// GroupStat is one group's figures for one metric, against its set's
// baseline.
type GroupStat struct {
	// Configuration is the factor values of the group's set; Letter names
	// the group as the table and the plot do; Baseline is the label of
	// the group it is compared with.
	Configuration string `json:"configuration"`
	Letter        string `json:"letter"`
	Baseline      string `json:"baseline"`
	Metric        string `json:"metric"`
	Unit          string `json:"unit,omitempty"`
	Group         string `json:"group"`
	N             int    `json:"n"`
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

// Stats computes every headline metric of every group against its set's
// baseline, in metric, set, then group order; a metric's p-values are
// Holm-adjusted over all its comparisons.
func (c Compared) Stats(level float64) []GroupStat {
	num := results.Optional
	var out []GroupStat
	for _, m := range Metrics {
		var ps []float64
		start := len(out)
		gi := 0
		for _, set := range c.Sets {
			base := set.Groups[0].Values[m.Metric]
			for i, g := range set.Groups {
				letterOf := Letter(gi)
				gi++
				xs := g.Values[m.Metric]
				if len(xs) == 0 || len(base) == 0 {
					continue
				}
				d := stats.Describe(xs, level)
				s := GroupStat{Configuration: set.Configuration, Letter: letterOf, Baseline: set.Groups[0].Label, Metric: m.Metric,
					Unit: results.Unit(m.Metric), Group: g.Label, N: d.N, Mean: num(d.Mean), CILow: num(d.CILow), CIHigh: num(d.CIHigh), Values: xs,
					CICrossesZero: CrossesZero(m.Metric, d)}
				p := math.NaN()
				if i > 0 {
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
		}
		for i, p := range stats.Holm(ps) {
			s := &out[start+i]
			s.PHolm = num(p)
			s.Significant = !math.IsNaN(p) && p < 1-level
		}
	}
	return out
}

// Comparisons counts the tests of one metric (groups other than a
// baseline): the number Holm's adjustment is over.
func (c Compared) Comparisons() int {
	n := 0
	for _, s := range c.Sets {
		n += len(s.Groups) - 1
	}
	return n
}

// Letter names the i-th group: A, B, …, Z, AA, AB, …
func Letter(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('A'+(i-1)%26)) + s
	}
	return s
}

func CrossesZero(metric string, s stats.Summary) bool {
	return s.N >= 2 && !math.IsNaN(s.HalfWidth) && results.CICrossesZero(metric, s.Mean-s.HalfWidth)
}
