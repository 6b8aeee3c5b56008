package chaos

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// outcomeCode is a table cell's short form of an outcome.
var outcomeCode = map[string]string{OutDone: "D", OutDoneFlagged: "DF", OutFailedRetried: "FR", OutFailed: "F", OutViolation: "V"}

// Cell is the outcomes of the kills of one target in one phase.
type Cell map[string]int

// Table is target × phase → outcome counts, by the phase observed at the
// kill (the planned one when the kill was not delivered, in a column of
// its own).
func Table(kills []KillRecord) (targets []string, cells map[string]map[string]Cell) {
	cells = map[string]map[string]Cell{}
	seen := map[string]bool{}
	for _, k := range kills {
		t := k.Target + instSuffix(k.Instance)
		if !seen[t] {
			seen[t] = true
			targets = append(targets, t)
		}
		ph := k.PhaseObserved
		switch {
		case k.Target == TargetNone:
			ph = "control"
		case !k.Delivered:
			ph = "not-killed"
		}
		if ph == "" {
			ph = k.Phase
		}
		if cells[t] == nil {
			cells[t] = map[string]Cell{}
		}
		if cells[t][ph] == nil {
			cells[t][ph] = Cell{}
		}
		cells[t][ph][k.Outcome]++
	}
	sort.Strings(targets)
	return targets, cells
}

func (c Cell) String() string {
	var parts []string
	for _, o := range Outcomes {
		if n := c[o]; n > 0 {
			s := outcomeCode[o]
			if n > 1 {
				s = fmt.Sprintf("%d%s", n, s)
			}
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, " ")
}

// tableColumns are the phases in order, then final states a fast phase
// may already have left for, then undelivered kills.
func tableColumns(cells map[string]map[string]Cell) []string {
	cols := append([]string(nil), Phases...)
	extra := map[string]bool{}
	for _, byPhase := range cells {
		for ph := range byPhase {
			known := false
			for _, c := range cols {
				known = known || c == ph
			}
			if !known {
				extra[ph] = true
			}
		}
	}
	var ex []string
	for ph := range extra {
		ex = append(ex, ph)
	}
	sort.Strings(ex)
	return append(cols, ex...)
}

// PrintSummary writes the tables and the violations.
func PrintSummary(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n==== chaos suite, seed %d: %s ====\n", r.Seed, r.Finished.Sub(r.Started).Round(1e9))
	for _, s := range r.Segments {
		fmt.Fprintf(w, "\n-- segment %s (instances %v) --\n", s.Name, s.Replicas)
		if s.Error != "" {
			fmt.Fprintf(w, "HARNESS ERROR: %s\n", s.Error)
		}
		targets, cells := Table(s.Kills)
		cols := tableColumns(cells)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "target\\phase\t%s\n", strings.Join(cols, "\t"))
		for _, t := range targets {
			row := []string{t}
			for _, c := range cols {
				row = append(row, cells[t][c].String())
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "D done · DF done-flagged · FR failed-retried · F failed · V violation (phase = the run's state when the kill went out)")
		totals, controls := map[string]int{}, map[string]int{}
		nk, nc := 0, 0
		for _, k := range s.Kills {
			if k.Target == TargetNone {
				controls[k.Outcome]++
				nc++
				continue
			}
			totals[k.Outcome]++
			nk++
		}
		var tot, ctl []string
		for _, o := range Outcomes {
			tot = append(tot, fmt.Sprintf("%s %d", o, totals[o]))
			ctl = append(ctl, fmt.Sprintf("%s %d", o, controls[o]))
		}
		fmt.Fprintf(w, "kills: %s (of %d)\n", strings.Join(tot, ", "), nk)
		if nc > 0 {
			fmt.Fprintf(w, "controls (no kill): %s (of %d) — a violation here is the machine or the platform without any kill\n", strings.Join(ctl, ", "), nc)
		}
		cov := CoverageOf(delivered(s.Kills), func(k Kill) string { return observed(s.Kills, k) })
		fmt.Fprintf(w, "kills delivered: %s", cov)
		if m := cov.Missing(); len(m) > 0 && s.Name != FaultKube { // the kube faults aim at provisioning and teardown only
			fmt.Fprintf(w, "  — NOT COVERED: %s", strings.Join(m, ", "))
		}
		fmt.Fprintln(w)

		fmt.Fprintln(w, "\nper kill:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "slot\ttarget\tplanned\tobserved\tdown s\trecover s\tfailed after s\toutcome\trecords lost\tmax record gap ms\tsamples lost\tmax sample hole ms\tcpu pressure\tviolations")
		for _, k := range s.Kills {
			detect := "-"
			if k.DetectS > 0 {
				detect = fmt.Sprintf("%.1f", k.DetectS)
			}
			fmt.Fprintf(tw, "%d\t%s%s\t%s\t%s\t%.1f\t%.1f\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", k.Slot, k.Target, instSuffix(k.Instance), k.Phase, orDash(k.PhaseObserved),
				k.DownS, k.RecoverS, detect, k.Outcome, k.RecordsLost, k.MaxRecordGapMs, k.SamplesLost, k.MaxSampleHole, pct(k.CPUPressure), orDash(k.Violations))
		}
		_ = tw.Flush()
		if s.Name == FaultKube {
			kubeSummary(w, s)
		}
		var vs []Violation
		for _, run := range append(append([]RunFacts(nil), s.References...), s.Runs...) {
			vs = append(vs, run.Violations...)
		}
		vs = append(vs, s.Suite...)
		if len(vs) > 0 {
			fmt.Fprintln(w, "\nviolations:")
			for _, v := range vs {
				fmt.Fprintf(w, "  %s\n", v)
			}
		}
		if len(s.Exits) > 0 {
			fmt.Fprintln(w, "\nunexpected exits (restarted by the suite after 1 s):")
			for _, e := range s.Exits {
				fmt.Fprintf(w, "  %s %s: %s\n", e.At.Format("15:04:05.000"), e.Proc, e.Status)
			}
		}
		for _, p := range s.Shutdown {
			fmt.Fprintf(w, "shutdown: %s\n", p)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	n := len(r.Violations())
	unconfirmed, excused := 0, 0
	for _, s := range r.Segments {
		for _, run := range append(append([]RunFacts(nil), s.References...), s.Runs...) {
			for _, v := range run.Violations {
				switch {
				case !v.Confirmed:
					unconfirmed++
				case v.Excused != "":
					excused++
				}
			}
		}
	}
	fmt.Fprintf(w, "\n%d violation(s); %d deviation(s) not counted: %d unconfirmed by the second source, %d on an overloaded machine; %d harness problem(s)\n",
		n, unconfirmed+excused, unconfirmed, excused, len(r.HarnessErrors()))
	for _, e := range r.HarnessErrors() {
		fmt.Fprintf(w, "  harness: %s\n", e)
	}
}

func pct(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

func delivered(ks []KillRecord) []Kill {
	var out []Kill
	for _, k := range ks {
		if k.Delivered {
			out = append(out, k.Kill)
		}
	}
	return out
}

func observed(ks []KillRecord, k Kill) string {
	for _, r := range ks {
		if r.Slot == k.Slot {
			return r.PhaseObserved
		}
	}
	return ""
}

// WriteReport writes report.json, summary.txt, kills.csv, runs.csv and
// table.csv under dir.
func WriteReport(dir string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return fmt.Errorf("write report.json: %w", err)
	}
	var sb strings.Builder
	PrintSummary(&sb, r)
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write summary.txt: %w", err)
	}
	kills := [][]string{{"segment", "slot", "target", "instance", "phase_planned", "phase_observed", "offset_s", "restart_after_s", "delivered",
		"pid", "down_s", "recover_s", "detect_s", "experiment_id", "runs", "final_after_s", "outcome", "violations", "records_lost", "max_record_gap_ms",
		"samples_lost", "max_sample_hole_ms", "cpu_pressure", "noticed_s", "recovered_s", "recovery", "left_behind", "reason", "harness_error"}}
	metricCols := append(append(JudgedMetrics(), InfoMetrics()...), MSUTPower, MNodePower, MOwnNodePow)
	head := append([]string{"segment", "slot", "role", "run_id", "config", "state", "flags", "reason", "window_s"}, metricCols...)
	runs := [][]string{append(head, "input_copies", "max_record_gap_ms", "samples_lost", "sut_died_at", "dup_samples", "dup_run_metrics",
		"dup_results", "node_util", "cpu_pressure", "violations")}
	table := [][]string{{"segment", "target", "phase", "outcome", "count"}}
	f := func(v float64, ok bool) string {
		if !ok {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	for _, s := range r.Segments {
		for _, k := range s.Kills {
			kills = append(kills, []string{s.Name, fmt.Sprint(k.Slot), k.Target, fmt.Sprint(k.Instance), k.Phase, k.PhaseObserved,
				f(k.Offset.Seconds(), true), f(k.RestartAfter.Seconds(), true), fmt.Sprint(k.Delivered), fmt.Sprint(k.Pid), f(k.DownS, true),
				f(k.RecoverS, true), f(k.DetectS, true), k.ExperimentID, strings.Join(k.RunIDs, " "), f(k.FinalAfter, true), k.Outcome, k.Violations,
				fmt.Sprint(k.RecordsLost), fmt.Sprint(k.MaxRecordGapMs), fmt.Sprint(k.SamplesLost), fmt.Sprint(k.MaxSampleHole),
				f(k.CPUPressure, k.CPUPressure >= 0), f(k.NoticedS, k.Recovery != "" && k.NoticedS >= 0), f(k.RecoveredS, k.Recovery != "" && k.RecoveredS >= 0),
				k.Recovery, k.LeftBehind, k.Reason, k.Error})
		}
		for _, run := range append(append([]RunFacts(nil), s.References...), s.Runs...) {
			m := func(name string) string { v, ok := run.Metrics[name]; return f(v, ok) }
			var vk []string
			for _, v := range run.Violations {
				switch {
				case v.Counts():
					vk = append(vk, v.Kind)
				case v.Confirmed:
					vk = append(vk, v.Kind+"(excused)")
				default:
					vk = append(vk, v.Kind+"?")
				}
			}
			row := []string{s.Name, fmt.Sprint(run.Slot), run.Role, run.RunID, run.Config, run.State, strings.Join(run.Flags, " "),
				run.Reason, f(run.WindowS(), run.MeasureEndMs > 0)}
			for _, name := range metricCols {
				row = append(row, m(name))
			}
			util, press := "", ""
			if run.Own != nil {
				util, press = f(run.Own.NodeUtil, true), f(run.Own.CPUPressure, run.Own.CPUPressure >= 0)
			}
			runs = append(runs, append(row, fmt.Sprint(run.Topics.InputCopies), fmt.Sprint(run.Topics.MaxRecordGapMs),
				fmt.Sprint(run.SamplesLost), msTime(run.SUT.DiedAtMs), fmt.Sprint(run.DupSamples), fmt.Sprint(run.DupRunMetrics),
				fmt.Sprint(run.DupResults), util, press, strings.Join(vk, " ")))
		}
		targets, cells := Table(s.Kills)
		for _, t := range targets {
			for _, ph := range tableColumns(cells) {
				for _, o := range Outcomes {
					if n := cells[t][ph][o]; n > 0 {
						table = append(table, []string{s.Name, t, ph, o, fmt.Sprint(n)})
					}
				}
			}
		}
	}
	for name, rows := range map[string][][]string{"kills.csv": kills, "runs.csv": runs, "table.csv": table} {
		if err := writeCSV(filepath.Join(dir, name), rows); err != nil {
			return err
		}
	}
	return nil
}

func writeCSV(path string, rows [][]string) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := csv.NewWriter(fh)
	if err := w.WriteAll(rows); err != nil {
		_ = fh.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return fh.Close()
}
