// greenflow validate and greenflow submit: read a spec, check it, publish it.

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
)

func runValidate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	var sf specFlags
	sf.register(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := sf.read()
	if err != nil {
		return err
	}
	p, err := spec.Prepare(data, sf.sets, true)
	if err != nil {
		return err
	}
	// Render what the provisioner will (manifest templates too), so a
	// template that cannot render fails here, with its spec line, not at
	// provision time.
	if err := provisionerapp.CheckSpec(p.Experiment, data); err != nil {
		return fmt.Errorf("%s: the system under test does not render:\n%w", sf.file, err)
	}
	fmt.Fprintf(stdout, "%s: valid; experiment %q expands to %d runs\n", sf.file, p.Experiment.Metadata.Name, p.Runs)
	return nil
}

func runSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c connFlags
	c.register(fs)
	var sf specFlags
	sf.register(fs, "")
	watch := fs.Bool("watch", false, "follow progress and print the results table at the end")
	yes := fs.Bool("yes", false, "submit even when the sweep exceeds 10,000 runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := sf.prepare(*yes)
	if err != nil {
		return err
	}
	if err := c.resolve(true); err != nil {
		return err
	}
	_, err = submitAndWatch(ctx, c.natsURL, c.clickhouseDSN, p, *watch, stdout, func(id string) string {
		return fmt.Sprintf("submitted experiment %s (%d runs)", id, p.Runs)
	})
	return err
}

// submitAndWatch submits a prepared spec through the NATS at natsURL,
// prints submitted(id), and with watch follows the experiment to its end
// and prints its results from the ClickHouse at dsn. It returns the
// experiment's id (also when watching fails).
func submitAndWatch(ctx context.Context, natsURL, dsn string, p spec.Prepared, watch bool, stdout io.Writer, submitted func(id string) string) (string, error) {
	b, err := bus.Connect(ctx, natsURL, "greenflow-cli", zap.NewNop(), nil)
	if err != nil {
		return "", err
	}
	defer b.Close()
	since := time.Now().Add(-time.Second) // clocks differ
	id, err := Submit(ctx, b, p.Experiment, p.Resolved)
	if err != nil {
		return "", err
	}
	fmt.Fprintln(stdout, submitted(id))
	if !watch {
		return id, nil
	}
	return id, watchAndReport(ctx, b, dsn, id, since, stdout)
}

// Submit hands an experiment to a scheduler and returns its id. Through
// the scheduler's request-reply API when one answers: it records the
// experiment before replying, so status and cancel answer at once (state
// submitted) however busy it is. With no scheduler answering (none is
// running yet) the experiment.submit command is queued on the stream, and
// a scheduler takes it when it starts. A trigger template is always queued
// (the scheduler arms it).
func Submit(ctx context.Context, b *bus.Bus, e *spec.Experiment, resolved string) (string, error) {
	if e.Spec.Trigger == nil {
		req, _ := json.Marshal(map[string]any{"spec": resolved, "yes": true, "submitted_by": "cli"})
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		msg, err := b.Conn().RequestWithContext(rctx, subjectSubmit, req)
		cancel()
		switch {
		case err == nil:
			var rep struct {
				ID       string   `json:"id"`
				Error    string   `json:"error"`
				Problems []string `json:"problems"`
			}
			if err := json.Unmarshal(msg.Data, &rep); err != nil {
				return "", fmt.Errorf("submit: the scheduler's answer is not JSON: %w", err)
			}
			switch {
			case len(rep.Problems) > 0:
				return "", errors.Join(append([]error{errors.New(rep.Error)}, errorsOf(rep.Problems)...)...)
			case rep.ID != "":
				return rep.ID, nil
			}
			// The scheduler could not take it now (not ready yet, its
			// bucket unreachable): queue the command; it is taken when it can.
		case errors.Is(err, nats.ErrNoResponders):
			// no scheduler yet: queue the command
		default:
			return "", fmt.Errorf("submit through the scheduler's API (it may have been accepted: see greenflow list): %w", err)
		}
	}
	id := spec.NewExperimentID(e.Metadata.Name, time.Now())
	if err := b.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: resolved, SubmittedBy: "cli"}, "submit:"+id); err != nil {
		return "", err
	}
	return id, nil
}

func errorsOf(msgs []string) []error {
	out := make([]error, len(msgs))
	for i, m := range msgs {
		out[i] = errors.New(m)
	}
	return out
}
