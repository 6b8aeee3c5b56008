package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/stats"
	"github.com/greenflow/greenflow/pkg/store"
)

// compareMetrics are the headline metrics compared, in print order.
var compareMetrics = []struct{ metric, format string }{
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

// Group is one side of a comparison: the values of each metric over its runs.
type Group struct {
	Label  string
	RunIDs []string
	Values map[string][]float64
}

// NewGroup collects the metrics of rows under label.
func NewGroup(label string, rows []ResultRow) Group {
	g := Group{Label: label, Values: map[string][]float64{}}
	for _, r := range rows {
		g.RunIDs = append(g.RunIDs, r.RunID)
		for m, v := range r.Metrics {
			g.Values[m] = append(g.Values[m], v)
		}
	}
	return g
}

// Comparison is A against B: Welch's test of B - A per metric.
type Comparison struct {
	A, B Group
}

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("compare", stderr)
	exp := fs.String("experiment", "", "compare configurations (config hashes or unique prefixes) of this experiment")
	level := fs.Float64("level", DefaultLevel, "confidence level of the intervals; differences with p below 1-level are marked")
	format := fs.String("format", "table", "table, csv or json (csv and json: every group against the first, Holm-adjusted)")
	plotFile := fs.String("plot", "", "also write an SVG plot of --metric by group (repetitions, mean and interval) to this file")
	metric := fs.String("metric", results.SUTMicroJPerEvent, "the metric of --plot")
	fs.Usage = func() {
		fmt.Fprint(stderr, analysisUsage)
		fmt.Fprint(stderr, "\ngreenflow compare A B [C …]: experiments (EXP), configurations of experiments (EXP:HASH-PREFIX), or with\n"+
			"--experiment EXP its configurations (HASH-PREFIX). Two: Welch's t-test of B - A; more: each against A, Holm-adjusted.\n\nFlags of compare:\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return errors.New("expected at least two arguments A B …: experiment ids (EXP or EXP:HASH-PREFIX), or config hashes with --experiment")
	}
	if *format != "table" && *format != "csv" && *format != "json" {
		return fmt.Errorf("--format %q: expected table, csv or json", *format)
	}
	if !(*level > 0 && *level < 1) {
		return fmt.Errorf("--level %g: expected a confidence level between 0 and 1", *level)
	}
	st, closeStore, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer closeStore()
	groups, err := compareGroups(ctx, st, *exp, pos)
	if err != nil {
		return err
	}
	if *plotFile != "" {
		svg, err := ComparePlotSVG(groups, *metric, *level)
		if err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
		if err := os.WriteFile(*plotFile, []byte(svg), 0o644); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	if len(pos) == 2 && *format == "table" {
		// Two sides: the pairwise table, matching the factor combinations of
		// two experiments that both ran several.
		cmps := []Comparison{{A: groups[0], B: groups[1]}}
		if *exp == "" && len(groups) > 2 {
			if cmps, err = matchStored(ctx, st, pos[0], pos[1]); err != nil {
				return err
			}
		}
		for i, cmp := range cmps {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			if err := WriteComparison(stdout, cmp, *level); err != nil {
				return err
			}
		}
		return nil
	}
	return WriteCompareMany(stdout, *format, groups, *level)
}

// matchStored pairs the factor combinations two experiments share.
func matchStored(ctx context.Context, st *store.Store, a, b string) ([]Comparison, error) {
	ra, err := LoadResults(ctx, st, a)
	if err != nil {
		return nil, err
	}
	rb, err := LoadResults(ctx, st, b)
	if err != nil {
		return nil, err
	}
	return MatchExperiments(a, ra, b, rb)
}

// compareGroups reads the groups the arguments name: with experiment, its
// configurations by hash prefix; otherwise EXP:HASH-PREFIX for one
// configuration of an experiment, or EXP for each of its configurations.
func compareGroups(ctx context.Context, st *store.Store, experiment string, args []string) ([]Group, error) {
	loaded := map[string][]ResultRow{}
	load := func(id string) ([]ResultRow, error) {
		if rows, ok := loaded[id]; ok {
			return rows, nil
		}
		rows, err := LoadResults(ctx, st, id)
		if err == nil && len(rows) == 0 {
			err = fmt.Errorf("experiment %s: no runs stored", id)
		}
		loaded[id] = rows
		return rows, err
	}
	var groups []Group
	for _, arg := range args {
		id, prefix, hasPrefix := strings.Cut(arg, ":")
		if experiment != "" {
			id, prefix, hasPrefix = experiment, arg, true
		}
		rows, err := load(id)
		if err != nil {
			return nil, err
		}
		if hasPrefix {
			sel, err := selectConfig(rows, prefix)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", arg, err)
			}
			groups = append(groups, NewGroup(groupLabel(labelExp(experiment, id), sel[0].ConfigHash, sel[0].Factors), sel))
			continue
		}
		by, keys := byFactors(doneRows(rows))
		if len(keys) == 0 {
			return nil, fmt.Errorf("%s: no done run with results", arg)
		}
		for _, k := range keys {
			label := id
			if len(keys) > 1 {
				label = groupLabel(id, "", by[k][0].Factors)
			}
			groups = append(groups, NewGroup(label, by[k]))
		}
	}
	return groups, nil
}

// labelExp leaves the experiment out of a label when every group is of it.
func labelExp(experiment, id string) string {
	if experiment != "" {
		return ""
	}
	return id
}

// doneRows keeps the runs that finished with results.
func doneRows(rows []ResultRow) []ResultRow {
	var out []ResultRow
	for _, r := range rows {
		if r.State == events.RunStateDone && len(r.Metrics) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// selectConfig returns the done runs of the one configuration whose hash
// starts with prefix.
func selectConfig(rows []ResultRow, prefix string) ([]ResultRow, error) {
	var out []ResultRow
	hashes := map[string]bool{}
	for _, r := range doneRows(rows) {
		if strings.HasPrefix(r.ConfigHash, prefix) {
			out = append(out, r)
			hashes[r.ConfigHash] = true
		}
	}
	switch {
	case len(hashes) == 0:
		return nil, fmt.Errorf("no done run has a config hash starting with %q", prefix)
	case len(hashes) > 1:
		return nil, fmt.Errorf("config hash prefix %q is ambiguous (%d configurations)", prefix, len(hashes))
	}
	return out, nil
}

// MatchExperiments pairs the configurations of two experiments: the single
// configuration of each, or else every factor combination both ran.
func MatchExperiments(idA string, rowsA []ResultRow, idB string, rowsB []ResultRow) ([]Comparison, error) {
	byA, keysA := byFactors(doneRows(rowsA))
	byB, keysB := byFactors(doneRows(rowsB))
	if len(keysA) == 0 || len(keysB) == 0 {
		return nil, fmt.Errorf("compare %s and %s: each needs done runs with results", idA, idB)
	}
	if len(keysA) == 1 && len(keysB) == 1 {
		return []Comparison{{A: NewGroup(idA, byA[keysA[0]]), B: NewGroup(idB, byB[keysB[0]])}}, nil
	}
	var out []Comparison
	for _, k := range keysA {
		if rb, ok := byB[k]; ok {
			out = append(out, Comparison{A: NewGroup(idA+" "+k, byA[k]), B: NewGroup(idB+" "+k, rb)})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("experiments %s and %s share no factor combination; compare configurations with --experiment", idA, idB)
	}
	return out, nil
}

func byFactors(rows []ResultRow) (map[string][]ResultRow, []string) {
	out := map[string][]ResultRow{}
	var keys []string
	for _, r := range rows {
		k := factors(r.Factors)
		if _, ok := out[k]; !ok {
			keys = append(keys, k)
		}
		out[k] = append(out[k], r)
	}
	sort.Strings(keys)
	return out, keys
}

// WriteComparison prints Welch's test of B - A for each headline metric both
// sides have.
func WriteComparison(w io.Writer, cmp Comparison, level float64) error {
	fmt.Fprintf(w, "A: %s (%d runs)\nB: %s (%d runs)\n", cmp.A.Label, len(cmp.A.RunIDs), cmp.B.Label, len(cmp.B.RunIDs))
	fmt.Fprintf(w, "Welch's t-test of B - A; mean ± %.0f%% CI half-width; g = Hedges' g; * = p < %.2g\n", level*100, 1-level)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "METRIC\tA\tB\tB-A %\tt\tdf\tp\tg\t\t")
	marked := false
	for _, m := range compareMetrics {
		a, b := cmp.A.Values[m.metric], cmp.B.Values[m.metric]
		if len(a) == 0 || len(b) == 0 {
			continue
		}
		sa, sb := stats.Describe(a, level), stats.Describe(b, level)
		r := stats.Welch(b, a, level)
		g := stats.HedgesG(b, a)
		diff := "-"
		if sa.Mean != 0 {
			diff = fmt.Sprintf("%+.1f", (sb.Mean-sa.Mean)/math.Abs(sa.Mean)*100)
		}
		mark := ""
		if r.P < 1-level {
			mark = "*"
		}
		ca, cb := meanCI(sa, m.format, math.Inf(1)), meanCI(sb, m.format, math.Inf(1))
		if crossesZero(m.metric, sa) {
			ca += " ‡"
			marked = true
		}
		if crossesZero(m.metric, sb) {
			cb += " ‡"
			marked = true
		}
		fmt.Fprint(tw, noNegZero(fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m.metric, ca, cb, diff,
			num(r.T, "%.2f"), num(r.DF, "%.1f"), num(r.P, "%.3g"), num(g, "%.2f"), mark)))
	}
	return flushMarked(tw, w, marked)
}

// flushMarked writes a comparison table and, when an interval in it was
// marked ‡, what the mark means.
func flushMarked(tw *tabwriter.Writer, w io.Writer, marked bool) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	if marked {
		_, err := fmt.Fprintln(w, "‡ "+results.CICrossesZeroNote)
		return err
	}
	return nil
}

// num formats v, or "-" when it is undefined.
func num(v float64, format string) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
