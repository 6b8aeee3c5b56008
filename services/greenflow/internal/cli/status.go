package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/runcharts"
	"github.com/greenflow/greenflow/pkg/schedapi"
)

func runList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	var c connFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var list []schedapi.ExperimentStatus
	if err := c.call(ctx, http.MethodGet, "/v1/experiments", "", nil, &list); err != nil {
		return err // e.g. the scheduler is still loading its state
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPERIMENT\tSTATE\tRUNS\tDONE\tFAILED\tCANCELLED\tSUBMITTED")
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", e.ID, e.State, e.RunsTotal, e.RunsDone, e.RunsFail, e.RunsCancelled,
			time.UnixMilli(e.CreatedMs).UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// runCounts says how an experiment's runs ended: cancelled runs are not
// failures and are named apart (only when there are any).
func runCounts(st schedapi.ExperimentStatus) string {
	out := fmt.Sprintf("%d/%d runs done, %d failed", st.RunsDone, st.RunsTotal, st.RunsFail)
	if st.RunsCancelled > 0 {
		out += fmt.Sprintf(", %d cancelled", st.RunsCancelled)
	}
	return out
}

func runStatusCmd(ctx context.Context, args []string, stdout io.Writer) error {
	c, id, err := parseExperimentArgs("status", args, nil)
	if err != nil {
		return err
	}
	var st schedapi.ExperimentStatus
	if err := c.call(ctx, http.MethodGet, "/v1/experiments/"+url.PathEscape(id), "", nil, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "experiment %s (%s): %s, %s%s\n", st.ID, st.Name, st.State, runCounts(st), reasonSuffix(st.Reason))
	if st.Testbed != nil {
		for _, row := range report.TestbedRows(*st.Testbed) {
			fmt.Fprintf(stdout, "  %s: %s\n", row[0], row[1])
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tREP\tFACTORS\tSTATE\tPHASE ENDS IN\tFLAGS\tREASON")
	for _, r := range st.Runs {
		left := "-"
		switch {
		case r.PhaseEndMs > 0:
			left = time.Until(time.UnixMilli(r.PhaseEndMs)).Round(100 * time.Millisecond).String()
		case r.StartsMs > 0 && r.State == events.RunStatePending && time.Until(time.UnixMilli(r.StartsMs)) > 0:
			left = "starts in " + time.Until(time.UnixMilli(r.StartsMs)).Round(100*time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", runcharts.ShortRun(r.RunID), r.Repetition, runcharts.Factors(r.Factors), r.State, left, report.FlagList(r.Flags),
			strings.ReplaceAll(r.Reason, "\n", " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return nil
}

func runCancel(ctx context.Context, args []string, stdout io.Writer) error {
	var reason string
	c, id, err := parseExperimentArgs("cancel", args, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "cancelled by user", "reason recorded with the runs")
	})
	if err != nil {
		return err
	}
	// A cancel of an experiment not expanded into runs yet is recorded on
	// it at once, and an unknown id is said so (404).
	body, _ := json.Marshal(map[string]string{"reason": reason})
	if err := c.call(ctx, http.MethodPost, "/v1/experiments/"+url.PathEscape(id)+"/cancel", "application/json", body, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cancel requested for %s\n", id)
	return nil
}
