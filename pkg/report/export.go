package report

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
)

// Export writes an experiment as tidy CSV files a notebook loads directly
// (pandas.read_csv, R read.csv), one observation per row:
//
//	runs.csv     one row per run: ids, config hash, state, window, one column per factor
//	phases.csv   run_id, phase, start_ms, end_ms
//	targets.csv  run_id, target_id, kind, node, role
//	results.csv  long form: run_id, config_hash, scope, subject, metric, value, unit, estimated
//	samples.csv  every sample of the runs' nodes during the runs' phases, with run, phase, role
//	summary.csv  per configuration and metric: n, mean, sd, cv, CI, median, min, max, flags
//	provenance.json  spec (resolved) and its hash, version, commit, machine, seed, meters per configuration
//	meters.csv   per run, node and source: the meter configuration in effect (export_meters.go)
//	testbed.csv  on a testbed only: per run and reserved node, the reservation (job, site, cluster, walltime,
//	             release time), the node's FQDN and pool, and how many of the run's targets it carried
//
// It returns the paths written.
func Export(ctx context.Context, st *store.Store, experimentID, dir string, withSamples bool) ([]string, error) {
	e, err := loadExperiment(ctx, st, experimentID)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create export dir: %w", err)
	}
	x := exporter{experiment: e, st: st, id: experimentID, results: e.results, hashOf: map[string]string{},
		factorNames: sortedKeys(e.rows, func(r ResultRow) map[string]string { return r.Factors })}
	for _, r := range e.runs {
		x.hashOf[r.RunID] = r.ConfigHash
	}
	var written []string
	path, prov, err := writeProvenance(ctx, st, experimentID, dir)
	if err != nil {
		return written, err
	}
	written = append(written, path)
	for _, f := range []struct {
		name string
		fill func(*csv.Writer) error
	}{
		{"runs.csv", x.runsCSV}, {"phases.csv", x.phasesCSV}, {"targets.csv", x.targetsCSV}, {"results.csv", x.resultsCSV},
		{"samples.csv", func(w *csv.Writer) error { return x.samplesCSV(ctx, w) }}, {"summary.csv", x.summaryCSV},
		{"meters.csv", func(w *csv.Writer) error { return x.metersCSV(ctx, w) }},
		{"testbed.csv", func(w *csv.Writer) error { return x.testbedCSV(w, prov.Testbed) }},
	} {
		if f.name == "samples.csv" && !withSamples || f.name == "testbed.csv" && prov.Testbed == nil {
			continue
		}
		path := filepath.Join(dir, f.name)
		if err := writeCSV(path, f.fill); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// writeProvenance writes provenance.json into dir.
func writeProvenance(ctx context.Context, st *store.Store, experimentID, dir string) (string, results.Provenance, error) {
	p, err := st.Provenance(ctx, experimentID)
	if err != nil {
		return "", p, err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return "", p, fmt.Errorf("encode provenance of %s: %w", experimentID, err)
	}
	path := filepath.Join(dir, "provenance.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", p, fmt.Errorf("write %s: %w", path, err)
	}
	return path, p, nil
}

// writeCSV writes the file at path with fill.
func writeCSV(path string, fill func(*csv.Writer) error) error {
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
	return nil
}

// exporter writes the files of one experiment's export.
type exporter struct {
	experiment
	st          *store.Store
	id          string
	results     []store.Result
	hashOf      map[string]string // config hash by run id
	factorNames []string
}

// Cell formats of the CSV files.
func CSVFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
func csvInt(v int64) string     { return strconv.FormatInt(v, 10) }
func csvUint(v uint32) string   { return strconv.Itoa(int(v)) }
func CSVBool(b bool) string     { return strconv.FormatBool(b) }

// wattmeterCell is a node's wattmeter: true, false, or unknown (its facts
// could not be looked up; provenance.json's missing says why).
func wattmeterCell(w *bool) string {
	if w == nil {
		return "unknown"
	}
	return CSVBool(*w)
}

func (x exporter) runsCSV(w *csv.Writer) error {
	head := []string{"experiment_id", "run_id", "index", "repetition", "config_hash", "state", "reason", "measure_start_ms", "measure_end_ms",
		"duration_s"}
	_ = w.Write(append(head, x.factorNames...))
	for i, r := range x.runs {
		rec := []string{x.id, r.RunID, csvUint(r.Index), csvUint(r.Repetition), r.ConfigHash, r.State, r.Reason,
			csvInt(r.MeasureStartMs), csvInt(r.MeasureEndMs), CSVFloat(float64(r.MeasureEndMs-r.MeasureStartMs) / 1000)}
		for _, f := range x.factorNames {
			rec = append(rec, rowFactors(x.rows, i, r.RunID)[f])
		}
		_ = w.Write(rec)
	}
	return nil
}

func (x exporter) phasesCSV(w *csv.Writer) error {
	_ = w.Write([]string{"run_id", "phase", "start_ms", "end_ms"})
	for _, r := range x.runs {
		_, _, phases := runcharts.Span(r)
		for _, p := range phases {
			_ = w.Write([]string{r.RunID, p.Name, csvInt(p.StartMs), csvInt(p.EndMs)})
		}
	}
	return nil
}

func (x exporter) targetsCSV(w *csv.Writer) error {
	_ = w.Write([]string{"run_id", "target_id", "kind", "node", "role"})
	for _, r := range x.runs {
		for _, t := range x.targets[r.RunID] {
			_ = w.Write([]string{t.RunID, t.TargetID, t.Kind, t.Node, t.Role})
		}
	}
	return nil
}

// testbedCSV writes, per run and reserved node, the reservation the run
// ran on; run_targets counts the run's targets on the node (a Kubernetes
// node is named by the host's short name, as k3s names it).
func (x exporter) testbedCSV(w *csv.Writer, tb *results.TestbedProvenance) error {
	_ = w.Write([]string{"run_id", "backend", "reservation", "reservation_id", "site", "cluster", "job_id", "walltime", "started_at", "ends_at",
		"release_by", "host", "role", "wattmeter", "run_targets"})
	for _, r := range x.runs {
		for _, n := range tb.Nodes {
			short, _, _ := strings.Cut(n.Host, ".")
			targets := 0
			for _, t := range x.targets[r.RunID] {
				if t.Node == n.Host || t.Node == short {
					targets++
				}
			}
			_ = w.Write([]string{r.RunID, tb.Backend, tb.Reservation, tb.ID, tb.Site, tb.Cluster, tb.JobID, tb.Walltime,
				tb.StartedAt.Format(time.RFC3339), tb.EndsAt.Format(time.RFC3339), tb.ReleaseBy.Format(time.RFC3339), n.Host, n.Role,
				wattmeterCell(n.Wattmeter), strconv.Itoa(targets)})
		}
	}
	return nil
}

func (x exporter) resultsCSV(w *csv.Writer) error {
	_ = w.Write([]string{"experiment_id", "run_id", "config_hash", "scope", "subject", "metric", "value", "unit", "estimated"})
	for _, r := range x.results {
		_ = w.Write([]string{x.id, r.RunID, x.hashOf[r.RunID], r.Scope, r.Subject, r.Metric, CSVFloat(r.Value), r.Unit, CSVBool(r.Estimated)})
	}
	return nil
}

func (x exporter) samplesCSV(ctx context.Context, w *csv.Writer) error {
	_ = w.Write([]string{"run_id", "phase", "ts_ms", "t_s", "node", "scope", "target_id", "component", "zone", "source", "power_w", "delta_j",
		"interval_ms", "estimated"})
	return exportSamples(ctx, x.st, w, x.runs, x.targets)
}

func (x exporter) summaryCSV(w *csv.Writer) error {
	return writeSummaryCSV(w, x.id, SummarizeRuns(x.rows, DefaultLevel), x.factorNames)
}

// csvNum writes NaN as an empty cell, which notebooks read as missing.
func csvNum(v float64) string {
	if v != v {
		return ""
	}
	return CSVFloat(v)
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

// exportRun is what samples.csv needs of a run: its span, phases, nodes
// (nil: every node, when no targets are stored) and its targets' roles.
type exportRun struct {
	run        store.Run
	start, end int64
	phases     []events.Phase
	nodes      map[string]bool
	roles      map[string]string
}

// clusterGapMs: runs whose spans are closer than this are read with one
// query (the samples between them are read and dropped); farther apart,
// each cluster is a query of its own.
const clusterGapMs = 10 * 60 * 1000

// exportSamples writes the runs' samples: each run's nodes over its phases,
// one row per sample key (a row the collector wrote twice comes once,
// merged or not), a sample in two runs' spans once for each. Runs close in
// time are read together: one query per cluster, not per run — a query
// reads the granules of its nodes, whichever run they hold, so twenty
// back-to-back runs read the same rows twenty times otherwise.
func exportSamples(ctx context.Context, st *store.Store, w *csv.Writer, runs []store.Run, targets map[string][]store.RunTarget) error {
	var list []exportRun
	for _, r := range runs {
		start, end, phases := runcharts.Span(r)
		if end <= start {
			continue
		}
		e := exportRun{run: r, start: start, end: end, phases: phases, roles: runcharts.Roles(targets[r.RunID])}
		if ns := runcharts.Nodes(targets[r.RunID]); len(ns) > 0 {
			e.nodes = map[string]bool{}
			for _, n := range ns {
				e.nodes[n] = true
			}
		}
		list = append(list, e)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].start < list[j].start })
	for i := 0; i < len(list); {
		j, end := i+1, list[i].end
		for j < len(list) && list[j].start <= end+clusterGapMs {
			end = max(end, list[j].end)
			j++
		}
		if err := exportCluster(ctx, st, w, list[i:j], list[i].start, end); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// exportCluster reads (from, to] once for the cluster's runs and writes each
// sample for every run whose span and nodes hold it.
func exportCluster(ctx context.Context, st *store.Store, w *csv.Writer, cluster []exportRun, from, to int64) error {
	var nodes []string // nil: every node
	seen := map[string]bool{}
	for _, e := range cluster {
		if e.nodes == nil {
			nodes = nil
			break
		}
		for n := range e.nodes {
			if !seen[n] {
				seen[n] = true
				nodes = append(nodes, n)
			}
		}
	}
	sort.Strings(nodes)
	return st.EachSample(ctx, nodes, from, to, func(x store.Sample) error {
		for _, e := range cluster {
			if x.TsMs <= e.start || x.TsMs > e.end || (e.nodes != nil && !e.nodes[x.Node]) {
				continue
			}
			r := e.run
			// t_s is seconds since the measured window's start; a run that
			// never reached it has none (it was the epoch time before).
			ts := ""
			if r.MeasureStartMs > 0 {
				ts = strconv.FormatFloat(float64(x.TsMs-r.MeasureStartMs)/1000, 'f', 3, 64)
			}
			if err := w.Write([]string{r.RunID, phaseAt(e.phases, x.TsMs), csvInt(x.TsMs), ts, x.Node, x.Scope, x.TargetID,
				component(x.Scope, x.Node, x.TargetID, e.roles), x.Zone, x.Source, CSVFloat(x.PowerW), CSVFloat(x.DeltaJ), csvUint(x.IntervalMs),
				CSVBool(x.Estimated)}); err != nil {
				return err
			}
		}
		return nil
	})
}
