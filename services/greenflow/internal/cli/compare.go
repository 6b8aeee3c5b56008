package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
)

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("compare", stderr)
	exp := fs.String("experiment", "", "compare configurations (config hashes or unique prefixes) of this experiment")
	level := fs.Float64("level", report.DefaultLevel, "confidence level of the intervals; differences with p below 1-level are marked")
	format := fs.String("format", "table", "table, csv or json: the same comparisons in each (like configurations matched, Holm-adjusted)")
	plotFile := fs.String("plot", "", "also write an SVG plot of --metric by group (repetitions, mean and interval) to this file")
	metric := fs.String("metric", results.SUTMicroJPerEvent, "the metric of --plot")
	fs.Usage = func() {
		fmt.Fprint(stderr, analysisUsage)
		fmt.Fprint(stderr, "\ngreenflow compare A B [C …]: experiments (EXP), configurations of experiments (EXP:HASH-PREFIX), or with\n"+
			"--experiment EXP its configurations (HASH-PREFIX). Arguments that each name one configuration are compared as named,\n"+
			"against the first. Otherwise like is compared with like: the runs of each configuration (factor values) against\n"+
			"the same configuration of the first argument that ran it; a configuration only one argument ran is listed as not\n"+
			"compared. Welch's t-test per metric, p Holm-adjusted over all comparisons of the metric; every format and --plot\n"+
			"show the same comparisons.\n\nFlags of compare:\n")
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
	sides, err := compareSides(ctx, st, *exp, pos)
	if err != nil {
		return err
	}
	cmp := MatchSides(sides)
	if len(cmp.Sets) == 0 {
		return fmt.Errorf("compare %s: no configuration was run by two of them (%d not compared); name configurations as EXP:HASH-PREFIX "+
			"to compare unlike ones", strings.Join(pos, " "), len(cmp.Unmatched))
	}
	if *plotFile != "" {
		svg, err := cmp.PlotSVG(*metric, *level)
		if err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
		if err := os.WriteFile(*plotFile, []byte(svg), 0o644); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	return cmp.Write(stdout, *format, *level)
}

// compareSides reads the groups each argument names: with experiment,
// its configurations by hash prefix; otherwise EXP:HASH-PREFIX for one
// configuration of an experiment, or EXP for each of its configurations.
func compareSides(ctx context.Context, st *store.Store, experiment string, args []string) ([][]Group, error) {
	loaded := map[string][]report.ResultRow{}
	load := func(id string) ([]report.ResultRow, error) {
		if rows, ok := loaded[id]; ok {
			return rows, nil
		}
		rows, err := report.LoadResults(ctx, st, id)
		if err == nil && len(rows) == 0 {
			err = fmt.Errorf("experiment %s: no runs stored", id)
		}
		loaded[id] = rows
		return rows, err
	}
	var sides [][]Group
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
			g := NewGroup(groupLabel(labelExp(experiment, id), sel[0].ConfigHash, sel[0].Factors), sel)
			g.Experiment = id
			sides = append(sides, []Group{g})
			continue
		}
		by, keys := byFactors(doneRows(rows))
		if len(keys) == 0 {
			return nil, fmt.Errorf("%s: no done run with results", arg)
		}
		var side []Group
		for _, k := range keys {
			g := NewGroup(groupLabel(id, "", by[k][0].Factors), by[k])
			g.Experiment = id
			side = append(side, g)
		}
		sides = append(sides, side)
	}
	return sides, nil
}

// labelExp leaves the experiment out of a label when every group is of it.
func labelExp(experiment, id string) string {
	if experiment != "" {
		return ""
	}
	return id
}

// doneRows keeps the runs that finished with results.
func doneRows(rows []report.ResultRow) []report.ResultRow {
	var out []report.ResultRow
	for _, r := range rows {
		if r.State == events.RunStateDone && len(r.Metrics) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// selectConfig returns the done runs of the one configuration whose hash
// starts with prefix.
func selectConfig(rows []report.ResultRow, prefix string) ([]report.ResultRow, error) {
	var out []report.ResultRow
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

func byFactors(rows []report.ResultRow) (map[string][]report.ResultRow, []string) {
	out := map[string][]report.ResultRow{}
	var keys []string
	for _, r := range rows {
		k := runcharts.Factors(r.Factors)
		if _, ok := out[k]; !ok {
			keys = append(keys, k)
		}
		out[k] = append(out[k], r)
	}
	sort.Strings(keys)
	return out, keys
}
