package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/greenflow/greenflow/pkg/schedapi"
)

// runTrigger lists armed templates and disarms them (submitting a spec
// with a trigger section arms it).
func runTrigger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand(args, "list or disarm")
	if err != nil {
		return err
	}
	fs, c := newFlagSet[connFlags]("trigger "+sub, stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if len(pos) != 0 {
			return fmt.Errorf("unexpected arguments %q", pos)
		}
		var ts []schedapi.TriggerStatus
		if err := c.call(ctx, http.MethodGet, "/v1/triggers", "", nil, &ts); err != nil {
			return err
		}
		when := func(ms int64) string {
			if ms == 0 {
				return "-"
			}
			return time.UnixMilli(ms).UTC().Format(time.RFC3339)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tON\tFIRED\tLAST FIRED\tNEXT\tARMED")
		for _, t := range ts {
			on := "subject " + t.Subject
			if t.Cron != "" {
				on = "cron " + t.Cron
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, on, t.Fired, when(t.LastFiredMs), when(t.NextFireMs), when(t.CreatedMs))
		}
		return tw.Flush()
	case "disarm":
		if len(pos) != 1 {
			return errors.New("expected one trigger NAME (greenflow trigger list shows them)")
		}
		if err := c.call(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(pos[0])+"/disarm", "", nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "disarmed trigger %s: it starts no more experiments (submit its spec again to re-arm it)\n", pos[0])
		return nil
	}
	return fmt.Errorf("trigger %q: expected list or disarm", sub)
}
