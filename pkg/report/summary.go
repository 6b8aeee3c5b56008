package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/greenflow/greenflow/pkg/compare"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/stats"
)

// Defaults of the per-configuration statistics, the analyzer's defaults.
const (
	DefaultLevel       = 0.95
	DefaultCVThreshold = 0.10
)

// ConfigRuns is a configuration and what became of its runs: RunIDs are
// its done runs, the ones summarised; Failed counts its runs that failed
// (every attempt), with their distinct reasons, so a configuration none of
// whose runs succeeded is still listed. ConfigSummary and its JSON form
// both hold it.
type ConfigRuns struct {
	ConfigHash string            `json:"config_hash"`
	Factors    map[string]string `json:"factors"`
	RunIDs     []string          `json:"run_ids"`
	Failed     int               `json:"failed_runs"`
	Reasons    []string          `json:"failure_reasons"`
}

// ConfigSummary is one configuration's runs summarised per run metric.
type ConfigSummary struct {
	ConfigRuns
	Metrics   map[string]stats.Summary `json:"-"`
	Estimated bool                     `json:"estimated"`
	Pareto    bool                     `json:"pareto_optimal"`
}

// Measured reports whether the configuration has a done run to summarise.
func (c ConfigSummary) Measured() bool { return len(c.RunIDs) > 0 }

// measuredOnly are the configurations with done runs (what plots draw).
func measuredOnly(sums []ConfigSummary) []ConfigSummary {
	var out []ConfigSummary
	for _, s := range sums {
		if s.Measured() {
			out = append(out, s)
		}
	}
	return out
}

// configKey groups runs: the config hash, or the factors for runs stored
// before hashes were recorded.
func configKey(r ResultRow) string {
	if r.ConfigHash != "" {
		return r.ConfigHash
	}
	return runcharts.Factors(r.Factors)
}

// SummarizeRuns groups runs by configuration (in order of their first run)
// and describes every run metric of the done runs with a Student-t interval
// at level; failed runs are counted with their reasons, and a configuration
// with no done run is listed without statistics. A flag (flag_<name>, stored
// only for the runs that raise it) is summarised over every done run of the
// configuration, 0 where it was not raised: its mean is the share of runs
// flagged. It also marks the Pareto front of mean throughput against mean
// SUT energy per event among the configurations that did not fail the lag
// SLO.
func SummarizeRuns(rows []ResultRow, level float64) []ConfigSummary {
	var out []ConfigSummary
	idx := map[string]int{}
	values := map[string]map[string][]float64{}
	for _, r := range rows {
		k := configKey(r)
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, ConfigSummary{ConfigRuns: ConfigRuns{ConfigHash: r.ConfigHash, Factors: r.Factors}, Metrics: map[string]stats.Summary{}})
			values[k] = map[string][]float64{}
		}
		if r.State == events.RunStateFailed {
			out[i].Failed++
			if r.Reason != "" && !slices.Contains(out[i].Reasons, r.Reason) {
				out[i].Reasons = append(out[i].Reasons, r.Reason)
			}
		}
		if r.State != events.RunStateDone || len(r.Metrics) == 0 {
			continue
		}
		out[i].RunIDs = append(out[i].RunIDs, r.RunID)
		out[i].Estimated = out[i].Estimated || r.Estimated
		for m, v := range r.Metrics {
			if _, flag := results.FlagOf(m); flag {
				continue
			}
			values[k][m] = append(values[k][m], v)
		}
		for _, f := range r.Flags {
			values[k][results.FlagMetric(f)] = append(values[k][results.FlagMetric(f)], 1)
		}
	}
	for k, i := range idx {
		n := len(out[i].RunIDs)
		for m, xs := range values[k] {
			if _, flag := results.FlagOf(m); flag {
				xs = append(xs, make([]float64, n-len(xs))...) // not raised: 0
			}
			out[i].Metrics[m] = stats.Describe(xs, level)
		}
	}
	// The front is drawn among the configurations whose lag SLO did not
	// fail: a throughput the system did not sustain is no trade-off.
	var pts []stats.Point
	var idxOf []int
	for i, c := range out {
		if !c.Measured() || lagVerdict(c) == "FAIL" {
			continue
		}
		pts = append(pts, stats.Point{X: c.mean(results.ThroughputEPS), Y: c.mean(results.SUTMicroJPerEvent)})
		idxOf = append(idxOf, i)
	}
	for _, i := range stats.ParetoFront(pts) {
		out[idxOf[i]].Pareto = true
	}
	return out
}

func (c ConfigSummary) mean(metric string) float64 {
	s, ok := c.Metrics[metric]
	if !ok {
		return math.NaN()
	}
	return s.Mean
}

// summaryColumns are the headline metrics of the per-configuration table.
var summaryColumns = columnsOf(results.ThroughputEPS, results.SUTEnergyJ, results.NodeMeanPowerW, results.SUTMicroJPerEvent,
	results.NodeMicroJPerEvent)

// meanCI formats a summary as "mean ± half-width" (just the mean for one
// run), with "!" when its CV exceeds cvThreshold.
func meanCI(s stats.Summary, format string, cvThreshold float64) string {
	if s.N == 0 || math.IsNaN(s.Mean) {
		return "-"
	}
	out := fmt.Sprintf(format, s.Mean)
	if !math.IsNaN(s.HalfWidth) {
		out += " ± " + fmt.Sprintf(format, s.HalfWidth)
	}
	if cvFlagged(s, cvThreshold) {
		out += " !"
	}
	return out
}

// WriteSummaryTable prints one line per configuration: repetitions, the
// headline metrics as mean ± CI half-width, the lag SLO verdict by median
// slope and Pareto membership.
func WriteSummaryTable(w io.Writer, sums []ConfigSummary, cvThreshold float64) error {
	level := DefaultLevel
	for _, s := range sums {
		for _, m := range s.Metrics {
			level = m.Level
			break
		}
	}
	fmt.Fprintf(w, "Per configuration (mean ± %.0f%% CI half-width, Student t; ! = CV above %.0f%%; P = on the Pareto front of events/s vs µJ/event):\n",
		level*100, cvThreshold*100)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"CONFIG", "FACTORS", "N", "FAILED"}
	for _, c := range summaryColumns {
		head = append(head, c.title)
	}
	head = append(head, "LAG SLO", "PARETO")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	anyEst, anyZero := false, false
	var unmeasured []string
	for _, s := range sums {
		if !s.Measured() {
			unmeasured = append(unmeasured, fmt.Sprintf("%s (%s): no done run — %s", ShortHash(s.ConfigHash), runcharts.Factors(s.Factors), failureWords(s)))
		}
		cells := []string{ShortHash(s.ConfigHash), runcharts.Factors(s.Factors), strconv.Itoa(len(s.RunIDs)), strconv.Itoa(s.Failed)}
		for _, c := range summaryColumns {
			cell := meanCI(s.Metrics[c.metric], c.format, cvThreshold)
			if s.Estimated && cell != "-" && results.Estimable(c.metric) {
				cell += "*"
				anyEst = true
			}
			if compare.CrossesZero(c.metric, s.Metrics[c.metric]) {
				cell += " ‡"
				anyZero = true
			}
			cells = append(cells, cell)
		}
		cells = append(cells, lagVerdict(s), map[bool]string{true: "P", false: ""}[s.Pareto])
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if anyEst {
		fmt.Fprintln(w, "* estimated (utilisation power model)")
	}
	if anyZero {
		fmt.Fprintln(w, "‡ "+results.CICrossesZeroNote)
	}
	for _, u := range unmeasured {
		fmt.Fprintln(w, u)
	}
	return nil
}

// failureWords says why a configuration has no done run.
func failureWords(s ConfigSummary) string {
	if s.Failed == 0 {
		return "its runs have not finished"
	}
	out := NRuns(s.Failed) + " failed"
	if len(s.Reasons) > 0 {
		out += ": " + strings.Join(s.Reasons, "; ")
	}
	return out
}

// writeSummaryCSV writes the per-configuration statistics in long form: one
// row per configuration and metric, with the factors as the last columns.
func writeSummaryCSV(w *csv.Writer, experimentID string, sums []ConfigSummary, factorNames []string) error {
	head := []string{"experiment_id", "config_hash", "runs", "failed_runs", "metric", "unit", "n", "mean", "sd", "cv", "ci_level", "ci_low", "ci_high",
		"ci_crosses_zero", "median", "min", "max", "cv_flag", "lag_slo", "pareto_optimal", "estimated", "failure_reasons"}
	if err := w.Write(append(head, factorNames...)); err != nil {
		return err
	}
	for _, s := range sums {
		reasons := strings.Join(s.Reasons, "; ")
		if !s.Measured() {
			// No statistics: one row says the configuration is there and why.
			rec := []string{experimentID, s.ConfigHash, "0", strconv.Itoa(s.Failed), "", "", "0", "", "", "", "", "", "",
				"", "", "", "", "", lagVerdict(s), CSVBool(false), CSVBool(false), reasons}
			for _, f := range factorNames {
				rec = append(rec, s.Factors[f])
			}
			if err := w.Write(rec); err != nil {
				return err
			}
			continue
		}
		for _, m := range slices.Sorted(maps.Keys(s.Metrics)) {
			v := s.Metrics[m]
			rec := []string{experimentID, s.ConfigHash, strconv.Itoa(len(s.RunIDs)), strconv.Itoa(s.Failed), m, results.Unit(m), strconv.Itoa(v.N), csvNum(v.Mean),
				csvNum(v.SD), csvNum(v.CV), CSVFloat(v.Level), csvNum(v.CILow), csvNum(v.CIHigh),
				CSVBool(compare.CrossesZero(m, v)), csvNum(v.Median), csvNum(v.Min), csvNum(v.Max),
				CSVBool(cvFlagged(v, DefaultCVThreshold)), lagVerdict(s), CSVBool(s.Pareto), CSVBool(s.Estimated && results.Estimable(m)), reasons}
			for _, f := range factorNames {
				rec = append(rec, s.Factors[f])
			}
			if err := w.Write(rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// SummaryStat is one metric of a configuration in JSON: NaN (undefined
// for one run) is null.
type SummaryStat struct {
	Unit    string   `json:"unit,omitempty"`
	N       int      `json:"n"`
	Mean    *float64 `json:"mean"`
	SD      *float64 `json:"sd"`
	CV      *float64 `json:"cv"`
	CILevel float64  `json:"ci_level"`
	CILow   *float64 `json:"ci_low"`
	CIHigh  *float64 `json:"ci_high"`
	// CICrossesZero: the interval reaches below zero for a quantity that
	// cannot be negative — the runs vary too much for it to say more.
	CICrossesZero bool     `json:"ci_crosses_zero"`
	Median        *float64 `json:"median"`
	Min           *float64 `json:"min"`
	Max           *float64 `json:"max"`
	CVFlag        bool     `json:"cv_flag"`
	Estimated     bool     `json:"estimated"`
}

// ConfigSummaryJSON is a configuration's statistics in JSON.
type ConfigSummaryJSON struct {
	ConfigRuns
	LagSLO    string                 `json:"lag_slo"` // ok | FAIL | - (no lag data)
	Pareto    bool                   `json:"pareto_optimal"`
	Estimated bool                   `json:"estimated"`
	Metrics   map[string]SummaryStat `json:"metrics"`
}

// SummaryJSON turns the statistics into their JSON form.
func SummaryJSON(sums []ConfigSummary) []ConfigSummaryJSON {
	num := results.Optional
	out := make([]ConfigSummaryJSON, 0, len(sums))
	for _, s := range sums {
		c := ConfigSummaryJSON{ConfigRuns: s.ConfigRuns, LagSLO: lagVerdict(s), Pareto: s.Pareto, Estimated: s.Estimated,
			Metrics: map[string]SummaryStat{}}
		// Lists are [] in JSON, never null.
		c.RunIDs, c.Reasons = append([]string{}, s.RunIDs...), append([]string{}, s.Reasons...)
		for m, v := range s.Metrics {
			c.Metrics[m] = SummaryStat{Unit: results.Unit(m), N: v.N, Mean: num(v.Mean), SD: num(v.SD), CV: num(v.CV), CILevel: v.Level,
				CILow: num(v.CILow), CIHigh: num(v.CIHigh), CICrossesZero: compare.CrossesZero(m, v), Median: num(v.Median), Min: num(v.Min), Max: num(v.Max),
				CVFlag: cvFlagged(v, DefaultCVThreshold), Estimated: s.Estimated && results.Estimable(m)}
		}
		out = append(out, c)
	}
	return out
}

// crossesZero reports whether a summary's interval reaches below zero for a
// metric that cannot be negative (results.CICrossesZero).
// cvFlagged reports repetitions that vary more than cvThreshold (CV), the
// "!" of the tables and cv_flag of CSV and JSON.
func cvFlagged(s stats.Summary, cvThreshold float64) bool { return s.N >= 2 && s.CV > cvThreshold }

// lagVerdict is Theodolite's verdict over repetitions: the median lag-trend
// slope against the threshold the analyzer recorded; "-" without slopes.
func lagVerdict(s ConfigSummary) string {
	slope, ok := s.Metrics[results.LagTrendSlope]
	thr, ok2 := s.Metrics[results.LagSLOThreshold]
	if !ok || !ok2 || slope.N == 0 {
		return "-"
	}
	if slope.Median < thr.Median {
		return "ok"
	}
	return "FAIL"
}

func ShortHash(h string) string {
	if len(h) > 10 {
		return h[:10]
	}
	if h == "" {
		return "-"
	}
	return h
}

// sortedKeys lists the keys of the maps of items, each once, sorted.
func sortedKeys[T, V any](items []T, of func(T) map[string]V) []string {
	set := map[string]bool{}
	for _, it := range items {
		for k := range of(it) {
			set[k] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// NRuns is "1 run" or "N runs".
func NRuns(n int) string {
	if n == 1 {
		return "1 run"
	}
	return strconv.Itoa(n) + " runs"
}
