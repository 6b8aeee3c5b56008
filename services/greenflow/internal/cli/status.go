package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// The scheduler's request-reply API (see services/scheduler).
const (
	subjectList   = "gf.api.experiments.list"
	subjectGet    = "gf.api.experiments.get"
	subjectSubmit = "gf.api.experiments.submit"
	subjectCancel = "gf.api.experiments.cancel"
)

type runStatus struct {
	RunID      string            `json:"run_id"`
	Index      int               `json:"index"`
	Repetition int               `json:"repetition"`
	Factors    map[string]string `json:"factors"`
	State      string            `json:"state"`
	Reason     string            `json:"reason"`
	PhaseEndMs int64             `json:"phase_end_ms"`
	StartsMs   int64             `json:"starts_ms"` // a retry waiting out its back-off
	Flags      []string          `json:"flags"`
}

type experimentStatus struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Reason    string      `json:"reason"`
	CreatedMs int64       `json:"created_ms"`
	RunsTotal int         `json:"runs_total"`
	RunsDone  int         `json:"runs_done"`
	RunsFail  int         `json:"runs_failed"`
	RunsCanc  int         `json:"runs_cancelled"`
	Runs      []runStatus `json:"runs"`
	Omitted   int         `json:"runs_omitted"`
	Error     string      `json:"error"`
}

func request(ctx context.Context, c connFlags, subject string, body []byte, v any) error {
	if err := c.resolve(true); err != nil {
		return err
	}
	nc, err := nats.Connect(c.natsURL)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", c.natsURL, err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return fmt.Errorf("ask the scheduler (%s): %w", subject, err)
	}
	return json.Unmarshal(m.Data, v)
}

func runList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	var c connFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var raw json.RawMessage
	if err := request(ctx, c, subjectList, nil, &raw); err != nil {
		return err
	}
	var list []experimentStatus
	if err := json.Unmarshal(raw, &list); err != nil {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return errors.New(e.Error) // e.g. the scheduler is still loading its state
		}
		return fmt.Errorf("read the scheduler's list: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPERIMENT\tSTATE\tRUNS\tDONE\tFAILED\tCANCELLED\tSUBMITTED")
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", e.ID, e.State, e.RunsTotal, e.RunsDone, e.RunsFail, e.RunsCanc,
			time.UnixMilli(e.CreatedMs).UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// runCounts says how an experiment's runs ended: cancelled runs are not
// failures and are named apart (only when there are any).
func runCounts(st experimentStatus) string {
	out := fmt.Sprintf("%d/%d runs done, %d failed", st.RunsDone, st.RunsTotal, st.RunsFail)
	if st.RunsCanc > 0 {
		out += fmt.Sprintf(", %d cancelled", st.RunsCanc)
	}
	return out
}

func runStatusCmd(ctx context.Context, args []string, stdout io.Writer) error {
	c, id, err := parseExperimentArgs("status", args, nil)
	if err != nil {
		return err
	}
	var st experimentStatus
	if err := request(ctx, c, subjectGet, []byte(id), &st); err != nil {
		return err
	}
	if st.Error != "" {
		return errors.New(st.Error)
	}
	fmt.Fprintf(stdout, "experiment %s (%s): %s, %s%s\n", st.ID, st.Name, st.State, runCounts(st), reasonSuffix(st.Reason))
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
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", shortRun(r.RunID), r.Repetition, factors(r.Factors), r.State, left, flagList(r.Flags),
			strings.ReplaceAll(r.Reason, "\n", " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Omitted > 0 {
		fmt.Fprintf(stdout, "(%d more runs not listed: a NATS reply is limited in size; GET /v1/experiments/%s on the scheduler's HTTP API lists them all)\n",
			st.Omitted, st.ID)
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
	b, err := c.connectBus(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	// Through the scheduler's API when one answers: a cancel of an
	// experiment not expanded into runs yet is recorded on it at once, and
	// an unknown id is said so. With no scheduler running, the command is
	// queued for the next one.
	req, _ := json.Marshal(map[string]string{"id": id, "reason": reason})
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	msg, err := b.Conn().RequestWithContext(rctx, subjectCancel, req)
	cancel()
	switch {
	case err == nil:
		var rep struct{ Error string }
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return fmt.Errorf("cancel: the scheduler's answer is not JSON: %w", err)
		}
		if rep.Error != "" {
			return errors.New(rep.Error)
		}
	case errors.Is(err, nats.ErrNoResponders):
		if err := b.Publish(ctx, events.ExperimentCancel{ExperimentID: id, Reason: reason}, ""); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cancel through the scheduler's API: %w", err)
	}
	fmt.Fprintf(stdout, "cancel requested for %s\n", id)
	return nil
}

// connectBus connects the CLI to the NATS the flags or a running dev stack
// point at.
func (c *connFlags) connectBus(ctx context.Context) (*bus.Bus, error) {
	if err := c.resolve(true); err != nil {
		return nil, err
	}
	return bus.Connect(ctx, c.natsURL, "greenflow-cli", zap.NewNop(), nil)
}
