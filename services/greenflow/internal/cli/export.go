package cli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/greenflow/greenflow/pkg/store"
)

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("export", stderr)
	dir := fs.String("dir", "", "directory to write the CSV files to (created if missing)")
	noSamples := fs.Bool("no-samples", false, "skip samples.csv")
	pos, st, closeStore, err := openAnalysis(ctx, fs, c, args, 1, "expected one EXPERIMENT id", func() error {
		if *dir == "" {
			return errors.New("--dir: an output directory is required")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer closeStore()
	files, err := Export(ctx, st, pos[0], *dir, !*noSamples)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	return nil
}

// Export writes an experiment as tidy CSV files a notebook loads directly
// (pandas.read_csv, R read.csv), one observation per row:
//
//	runs.csv     one row per run: ids, config hash, state, window, one column per factor
//	phases.csv   run_id, phase, start_ms, end_ms
//	targets.csv  run_id, target_id, kind, node, role
//	results.csv  long form: run_id, config_hash, scope, subject, metric, value, unit, estimated
//	samples.csv  every sample of the runs' nodes during the runs' phases, with run, phase, role
//	summary.csv  per configuration and metric: n, mean, sd, cv, CI, median, min, max, flags
//
// It returns the paths written.
func Export(ctx context.Context, st *store.Store, experimentID, dir string, withSamples bool) ([]string, error) {
	e, err := loadExperiment(ctx, st, experimentID)
	if err != nil {
		return nil, err
	}
	runs, rows, targets := e.runs, e.rows, e.targets
	res, err := st.Results(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create export dir: %w", err)
	}
	var written []string
	write := func(name string, fill func(w *csv.Writer) error) error {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		cw := csv.NewWriter(f)
		ferr := fill(cw)
		cw.Flush()
		if ferr == nil {
			ferr = cw.Error()
		}
		if err := f.Close(); ferr == nil && err != nil {
			ferr = err
		}
		if ferr != nil {
			return fmt.Errorf("write %s: %w", path, ferr)
		}
		written = append(written, path)
		return nil
	}
	factorNames := sortedKeys(rows, func(r ResultRow) map[string]string { return r.Factors })
	hashOf := map[string]string{}
	for _, r := range runs {
		hashOf[r.RunID] = r.ConfigHash
	}
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }

	if err := write("runs.csv", func(w *csv.Writer) error {
		head := []string{"experiment_id", "run_id", "index", "repetition", "config_hash", "state", "reason", "measure_start_ms", "measure_end_ms",
			"duration_s"}
		_ = w.Write(append(head, factorNames...))
		for i, r := range runs {
			rec := []string{experimentID, r.RunID, strconv.Itoa(int(r.Index)), strconv.Itoa(int(r.Repetition)), r.ConfigHash, r.State, r.Reason,
				i64(r.MeasureStartMs), i64(r.MeasureEndMs), g(float64(r.MeasureEndMs-r.MeasureStartMs) / 1000)}
			for _, f := range factorNames {
				rec = append(rec, rowFactors(rows, i, r.RunID)[f])
			}
			_ = w.Write(rec)
		}
		return nil
	}); err != nil {
		return written, err
	}
	if err := write("phases.csv", func(w *csv.Writer) error {
		_ = w.Write([]string{"run_id", "phase", "start_ms", "end_ms"})
		for _, r := range runs {
			_, _, phases := runSpan(r)
			for _, p := range phases {
				_ = w.Write([]string{r.RunID, p.Name, i64(p.StartMs), i64(p.EndMs)})
			}
		}
		return nil
	}); err != nil {
		return written, err
	}
	if err := write("targets.csv", func(w *csv.Writer) error {
		_ = w.Write([]string{"run_id", "target_id", "kind", "node", "role"})
		for _, r := range runs {
			for _, t := range targets[r.RunID] {
				_ = w.Write([]string{t.RunID, t.TargetID, t.Kind, t.Node, t.Role})
			}
		}
		return nil
	}); err != nil {
		return written, err
	}
	if err := write("results.csv", func(w *csv.Writer) error {
		_ = w.Write([]string{"experiment_id", "run_id", "config_hash", "scope", "subject", "metric", "value", "unit", "estimated"})
		for _, r := range res {
			_ = w.Write([]string{experimentID, r.RunID, hashOf[r.RunID], r.Scope, r.Subject, r.Metric, g(r.Value), r.Unit, strconv.FormatBool(r.Estimated)})
		}
		return nil
	}); err != nil {
		return written, err
	}
	if withSamples {
		if err := write("samples.csv", func(w *csv.Writer) error {
			_ = w.Write([]string{"run_id", "phase", "ts_ms", "t_s", "node", "scope", "target_id", "component", "zone", "source", "power_w", "delta_j",
				"interval_ms", "estimated"})
			for _, r := range runs {
				if err := exportSamples(ctx, st, w, r, targets[r.RunID]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return written, err
		}
	}
	sums := SummarizeRuns(rows, DefaultLevel)
	if err := write("summary.csv", func(w *csv.Writer) error {
		head := []string{"experiment_id", "config_hash", "runs", "metric", "n", "mean", "sd", "cv", "ci_level", "ci_low", "ci_high", "median", "min", "max",
			"cv_flag", "pareto_optimal", "estimated"}
		_ = w.Write(append(head, factorNames...))
		for _, s := range sums {
			for _, m := range slices.Sorted(maps.Keys(s.Metrics)) {
				x := s.Metrics[m]
				rec := []string{experimentID, s.ConfigHash, strconv.Itoa(len(s.RunIDs)), m, strconv.Itoa(x.N), csvNum(x.Mean), csvNum(x.SD), csvNum(x.CV),
					g(x.Level), csvNum(x.CILow), csvNum(x.CIHigh), csvNum(x.Median), csvNum(x.Min), csvNum(x.Max),
					strconv.FormatBool(x.N >= 2 && x.CV > DefaultCVThreshold), strconv.FormatBool(s.Pareto), strconv.FormatBool(s.Estimated)}
				for _, f := range factorNames {
					rec = append(rec, s.Factors[f])
				}
				_ = w.Write(rec)
			}
		}
		return nil
	}); err != nil {
		return written, err
	}
	return written, nil
}

// csvNum writes NaN as an empty cell, which notebooks read as missing.
func csvNum(v float64) string {
	if v != v {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// rowFactors finds a run's factors among rows (rows and runs share order;
// fall back to a search).
func rowFactors(rows []ResultRow, i int, runID string) map[string]string {
	if i < len(rows) && rows[i].RunID == runID {
		return rows[i].Factors
	}
	for _, r := range rows {
		if r.RunID == runID {
			return r.Factors
		}
	}
	return nil
}

// exportSamples writes one run's samples: its nodes (from the analysed
// targets; every node when none are stored) over its phases.
func exportSamples(ctx context.Context, st *store.Store, w *csv.Writer, r store.Run, targets []store.RunTarget) error {
	start, end, phases := runSpan(r)
	if end <= start {
		return nil
	}
	roles := rolesOf(targets)
	// One row per sample key: a row the collector wrote twice is exported
	// once, merged or not.
	return st.EachSample(ctx, nodesOf(targets), start, end, func(x store.Sample) error {
		return w.Write([]string{r.RunID, phaseAt(phases, x.TsMs), strconv.FormatInt(x.TsMs, 10),
			strconv.FormatFloat(float64(x.TsMs-r.MeasureStartMs)/1000, 'f', 3, 64), x.Node, x.Scope, x.TargetID,
			component(x.Scope, x.Node, x.TargetID, roles), x.Zone, x.Source, strconv.FormatFloat(x.PowerW, 'g', -1, 64),
			strconv.FormatFloat(x.DeltaJ, 'g', -1, 64), strconv.FormatUint(uint64(x.IntervalMs), 10), strconv.FormatBool(x.Estimated)})
	})
}
