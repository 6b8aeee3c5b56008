package report

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/store"
)

// ResultRow is one run's headline results, as printed and exported.
type ResultRow struct {
	RunID      string             `json:"run_id"`
	ConfigHash string             `json:"config_hash"`
	Index      uint32             `json:"index"`
	Repetition uint32             `json:"repetition"`
	Factors    map[string]string  `json:"factors"`
	State      string             `json:"state"`
	Reason     string             `json:"reason"`
	Metrics    map[string]float64 `json:"metrics"`
	Estimated  bool               `json:"estimated"`
	// Flags name what the analysis recovered or bridged (its flag_<name>
	// rows), sorted.
	Flags []string `json:"flags"`
}

// LoadResults joins runs and their run-scope results.
func LoadResults(ctx context.Context, st *store.Store, experimentID string) ([]ResultRow, error) {
	runs, err := st.Runs(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	res, err := st.Results(ctx, experimentID)
	if err != nil {
		return nil, err
	}
	return resultRows(runs, res), nil
}

// resultRows joins runs and their run-scope results, in run order.
func resultRows(runs []store.Run, res []store.Result) []ResultRow {
	byRun := map[string]*ResultRow{}
	var out []ResultRow
	for _, r := range runs {
		row := ResultRow{RunID: r.RunID, ConfigHash: r.ConfigHash, Index: r.Index, Repetition: r.Repetition, State: r.State, Reason: r.Reason, Metrics: map[string]float64{}}
		_ = json.Unmarshal([]byte(r.Factors), &row.Factors)
		out = append(out, row)
	}
	for i := range out {
		byRun[out[i].RunID] = &out[i]
	}
	for _, r := range res {
		row, ok := byRun[r.RunID]
		if !ok || r.Scope != results.ScopeRun {
			continue
		}
		row.Metrics[r.Metric] = r.Value
		row.Estimated = row.Estimated || r.Estimated
		if name, ok := results.FlagOf(r.Metric); ok && r.Value == 1 {
			row.Flags = append(row.Flags, name)
		}
	}
	for i := range out {
		sort.Strings(out[i].Flags)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// column is how the tables show a metric.
type column struct{ metric, title, format string }

// columns are the metrics the tables can show: their titles and formats.
var columns = func() map[string]column {
	out := map[string]column{}
	for _, c := range []column{
		{results.DurationS, "WINDOW s", "%.1f"},
		{results.OfferedRateEPS, "OFFERED/s", "%.0f"},
		{results.Events, "EVENTS", "%.0f"},
		{results.ThroughputEPS, "EVENTS/s", "%.0f"},
		{results.SUTEnergyJ, "SUT J", "%.2f"},
		{results.SUTMeanPowerW, "SUT W", "%.3f"},
		{results.NodeEnergyJ, "NODE J", "%.1f"},
		{results.NodeMeanPowerW, "NODE W", "%.2f"},
		{results.SUTMicroJPerEvent, "SUT µJ/EVENT", "%.1f"},
		{results.NodeMicroJPerEvent, "NODE µJ/EVENT", "%.1f"},
	} {
		out[c.metric] = c
	}
	return out
}()

// columnsOf returns the columns of metrics, in order.
func columnsOf(metrics ...string) []column {
	out := make([]column, len(metrics))
	for i, m := range metrics {
		out[i] = columns[m]
	}
	return out
}

// tableColumns are the metrics of the per-run table.
var tableColumns = columnsOf(results.DurationS, results.OfferedRateEPS, results.Events, results.ThroughputEPS, results.SUTEnergyJ,
	results.SUTMeanPowerW, results.NodeEnergyJ, results.NodeMeanPowerW, results.SUTMicroJPerEvent)

// WriteResults prints rows as a table, CSV (tidy: one row per run and
// metric, and one for a run without results) or JSON.
func WriteResults(w io.Writer, format string, rows []ResultRow) error {
	switch format {
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := []string{"RUN", "REP", "FACTORS", "STATE"}
		for _, c := range tableColumns {
			head = append(head, c.title)
		}
		head = append(head, "FLAGS")
		fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
		anyEst := false
		for _, r := range rows {
			cells := []string{runcharts.ShortRun(r.RunID), strconv.Itoa(int(r.Repetition)), runcharts.Factors(r.Factors), r.State}
			for _, c := range tableColumns {
				v, ok := r.Metrics[c.metric]
				cell := "-"
				if ok {
					cell = fmt.Sprintf(c.format, v)
					if r.Estimated && results.Estimable(c.metric) {
						cell += "*"
						anyEst = true
					}
				}
				cells = append(cells, cell)
			}
			cells = append(cells, FlagList(r.Flags))
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, r := range rows {
			if r.Reason != "" {
				fmt.Fprintf(w, "%s: %s\n", runcharts.ShortRun(r.RunID), r.Reason)
			}
		}
		if anyEst {
			fmt.Fprintln(w, "* estimated: no hardware energy counter was readable on the node; the energy comes from a power model "+
				"(the node's profile, or one calibrated on a metered node: export's meters.csv and provenance say which)")
		}
		for _, f := range explainedFlags(rows) {
			fmt.Fprintf(w, "%s: %s\n", f.Name, f.Help)
		}
		// With repetitions, the per-configuration statistics follow.
		sums := SummarizeRuns(rows, DefaultLevel)
		for _, s := range sums {
			if len(s.RunIDs) >= 2 {
				fmt.Fprintln(w)
				return WriteSummaryTable(w, sums, DefaultCVThreshold)
			}
		}
		return nil
	case "csv":
		// Every run has at least one row: a run without results (failed,
		// or not analysed yet) has one with an empty metric and value, so
		// a notebook sees which runs are missing and why.
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"run_id", "config_hash", "index", "repetition", "factors", "state", "metric", "value", "estimated", "flags", "reason"})
		for _, r := range rows {
			names := make([]string, 0, len(r.Metrics))
			for k := range r.Metrics {
				names = append(names, k)
			}
			sort.Strings(names)
			run := []string{r.RunID, r.ConfigHash, strconv.Itoa(int(r.Index)), strconv.Itoa(int(r.Repetition)), runcharts.Factors(r.Factors), r.State}
			tail := []string{strings.Join(r.Flags, ";"), r.Reason}
			if len(names) == 0 {
				_ = cw.Write(slices.Concat(run, []string{"", "", ""}, tail))
			}
			for _, k := range names {
				_ = cw.Write(slices.Concat(run, []string{k, strconv.FormatFloat(r.Metrics[k], 'g', -1, 64),
					strconv.FormatBool(r.Estimated && results.Estimable(k))}, tail))
			}
		}
		cw.Flush()
		return cw.Error()
	case "json":
		// Every record has the same keys: no flags is [], not absent.
		out := make([]ResultRow, len(rows))
		for i, r := range rows {
			if r.Flags == nil {
				r.Flags = []string{}
			}
			out[i] = r
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return fmt.Errorf("--format %q: expected table, csv or json", format)
}

// explainedFlags are the flags of rows, each with what it means, in the
// table's order: a flag is never printed without its explanation.
func explainedFlags(rows []ResultRow) []results.Flag {
	seen := map[string]bool{}
	for _, r := range rows {
		for _, f := range r.Flags {
			seen[f] = true
		}
	}
	var out []results.Flag
	for _, f := range results.Flags() {
		if seen[f.Name] {
			out = append(out, f)
		}
	}
	return out
}

// FlagList prints flags comma-separated, "-" for none.
func FlagList(flags []string) string {
	if len(flags) == 0 {
		return "-"
	}
	return strings.Join(flags, ",")
}

// WriteCapacity prints a capacity search's answer, if the experiment ran one.
func WriteCapacity(ctx context.Context, w io.Writer, st *store.Store, experimentID string) error {
	res, err := st.Results(ctx, experimentID)
	if err != nil {
		return err
	}
	m := map[string]store.Result{}
	for _, r := range res {
		if r.Scope == results.ScopeExperiment {
			m[r.Metric] = r
		}
	}
	c, ok := m[results.CapacityMsgPerS]
	if !ok {
		return nil
	}
	probes := fmt.Sprintf("%0.f probes", m[results.SearchProbes].Value)
	if u, ok := m[results.SearchProbesUnresolved]; ok && u.Value > 0 {
		probes += fmt.Sprintf(", %0.f with an unresolved lag verdict", u.Value)
	}
	if u, ok := m[results.SearchProbesInvalid]; ok && u.Value > 0 {
		probes += fmt.Sprintf(", %0.f not measurable", u.Value)
	}
	fmt.Fprintf(w, "\nCapacity (maximum sustained load, %s): %.0f msg/s", probes, c.Value)
	if _, ok := m[results.CapacityLowerBound]; ok {
		fmt.Fprint(w, " or more (a lower bound: the next load could not be measured)")
	}
	if e, ok := m[results.CapacitySUTMicroJPerEvent]; ok {
		est := ""
		if e.Estimated {
			est = " (estimated)"
		}
		fmt.Fprintf(w, " at %.1f µJ/event%s", e.Value, est)
	}
	fmt.Fprintln(w)
	return nil
}

// WriteConfigResults prints the per-configuration statistics of the done
// runs among rows as a table, CSV (long form: a row per configuration and
// metric, factors as columns) or JSON (null where a figure is undefined,
// e.g. the SD of one run).
func WriteConfigResults(w io.Writer, format, experimentID string, rows []ResultRow) error {
	sums := SummarizeRuns(rows, DefaultLevel)
	switch format {
	case "table":
		return WriteSummaryTable(w, sums, DefaultCVThreshold)
	case "csv":
		cw := csv.NewWriter(w)
		if err := writeSummaryCSV(cw, experimentID, sums, sortedKeys(rows, func(r ResultRow) map[string]string { return r.Factors })); err != nil {
			return err
		}
		cw.Flush()
		return cw.Error()
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(SummaryJSON(sums))
	}
	return fmt.Errorf("--format %q: expected table, csv or json", format)
}
