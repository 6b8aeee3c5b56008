package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/store"
)

// Retention policy of `greenflow prune`. Collectors sample their nodes all
// the time, also between experiments; those samples belong to no run and
// only fill the database. ClickHouse 18.16 has no TTL, so samples go a whole
// day at a time (the samples table's partitions): a day is dropped when it
// is older than --older-than and no run's span touches it (a run spans from
// its record's creation to the end of its measured window, or to now while
// it has none, an hour more on both sides; see store.SampleDays). A day a
// run touches is kept whole, its idle hours too. Runs, results and
// experiments are never pruned.

// PruneDay is one day of samples and what prune does with it.
type PruneDay struct {
	Day    string `json:"day"` // YYYY-MM-DD
	Rows   uint64 `json:"rows"`
	Bytes  uint64 `json:"bytes"`
	Runs   uint64 `json:"runs"`
	Action string `json:"action"` // drop | keep
	Why    string `json:"why"`
}

// PlanPrune decides, for every day of samples, whether the policy drops it:
// days before cutoff (YYYYMMDD) that no run touches.
func PlanPrune(days []store.SampleDay, cutoff uint32) []PruneDay {
	out := make([]PruneDay, 0, len(days))
	for _, d := range days {
		p := PruneDay{Day: fmt.Sprintf("%04d-%02d-%02d", d.Day/10000, d.Day/100%100, d.Day%100), Rows: d.Rows, Bytes: d.Bytes, Runs: d.Runs,
			Action: "keep"}
		switch {
		case d.Day >= cutoff:
			p.Why = "recent"
		case d.Runs > 0:
			p.Why = report.NRuns(int(d.Runs)) + " on it"
		default:
			p.Action, p.Why = "drop", "no run on it"
		}
		out = append(out, p)
	}
	return out
}

func runPrune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("prune", stderr)
	c.writer = true // it drops partitions
	olderThan := fs.Duration("older-than", 30*24*time.Hour, "only days older than this are considered (at least 24h)")
	dryRun := fs.Bool("dry-run", false, "say what would be dropped, drop nothing")
	format := fs.String("format", "table", "table or json")
	_, st, closeStore, err := openAnalysis(ctx, fs, c, args, 0, "prune takes no arguments", func() error {
		if *olderThan < 24*time.Hour {
			return fmt.Errorf("--older-than %s: expected at least 24h (today's samples may belong to a run about to start)", *olderThan)
		}
		if *format != "table" && *format != "json" {
			return fmt.Errorf("--format %q: expected table or json", *format)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer closeStore()
	today, err := st.Today(ctx)
	if err != nil {
		return err
	}
	days, err := st.SampleDays(ctx)
	if err != nil {
		return err
	}
	t, err := time.Parse("20060102", fmt.Sprint(today))
	if err != nil {
		return fmt.Errorf("the server's day %d: %w", today, err)
	}
	cutoff := t.Add(-*olderThan)
	plan := PlanPrune(days, uint32(cutoff.Year()*10000+int(cutoff.Month())*100+cutoff.Day()))
	var errs []error
	if !*dryRun {
		for i, p := range plan {
			if p.Action != "drop" {
				continue
			}
			if err := st.DropSampleDay(ctx, days[i].Day); err != nil {
				plan[i].Action, plan[i].Why = "failed", err.Error()
				errs = append(errs, err)
				continue
			}
			plan[i].Action = "dropped"
		}
	}
	if err := writePrune(stdout, *format, plan, *dryRun); err != nil {
		return err
	}
	return errors.Join(errs...)
}

func writePrune(w io.Writer, format string, plan []PruneDay, dryRun bool) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			DryRun bool       `json:"dry_run"`
			Days   []PruneDay `json:"days"`
		}{dryRun, plan})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DAY\tROWS\tSIZE\tRUNS\tACTION\tWHY")
	var rows, bytes uint64
	n := 0
	for _, p := range plan {
		action := p.Action
		if dryRun && action == "drop" {
			action = "would drop"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", p.Day, p.Rows, humanBytes(p.Bytes), p.Runs, action, p.Why)
		if p.Action == "drop" || p.Action == "dropped" {
			rows, bytes, n = rows+p.Rows, bytes+p.Bytes, n+1
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := "dropped"
	if dryRun {
		verb = "would drop"
	}
	_, err := fmt.Fprintf(w, "%s %d day(s): %d samples, %s\n", verb, n, rows, humanBytes(bytes))
	return err
}

func humanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
