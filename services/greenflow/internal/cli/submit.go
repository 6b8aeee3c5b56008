// greenflow validate and greenflow submit: read a spec, check it, publish it.

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/schedapi"
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
	fmt.Fprintf(stdout, "%s: valid; experiment %q expands to %s\n", sf.file, p.Experiment.Metadata.Name, nRuns(p.Runs))
	return nil
}

func runSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlagSet[connFlags]("submit", stderr)
	var sf specFlags
	sf.register(fs, "")
	watch := fs.Bool("watch", false, "follow progress and print the results table at the end")
	unverifiedWait := fs.Duration("watch-unverified-wait", time.Minute, "with --watch: once an event fails the check against the NATS trust file, "+
		"how long to wait for an event of the experiment that passes it before giving up")
	yes := fs.Bool("yes", false, "submit even when the sweep exceeds 10,000 runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := sf.prepare(*yes)
	if err != nil {
		return err
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	if *watch {
		if err := c.resolve(true); err != nil {
			return err
		}
	}
	creds := c.natsCreds(string(events.ServiceCLI))
	natsOpts, err := creds.Options()
	if err != nil {
		return err
	}
	var w *watchTarget
	if *watch {
		w = &watchTarget{natsURL: c.natsURL, natsOpts: natsOpts, trustFile: trustFileOf(creds), unverifiedWait: *unverifiedWait, dsn: c.currentDSN}
	}
	_, err = submitAndWatch(ctx, api, p, w, stdout, stderr, func(id string) string {
		return fmt.Sprintf("submitted experiment %s (%s)", id, nRuns(p.Runs))
	})
	return err
}

// watchTarget is where a watch follows an experiment: the NATS at natsURL,
// connected with natsOpts, whose events count when they pass the check
// against trustFile ("": unchecked); and the ClickHouse dsn gives when the
// experiment has ended, for its results.
type watchTarget struct {
	natsURL   string
	natsOpts  []nats.Option
	trustFile string
	// unverifiedWait is how long the watch waits for an event of the
	// experiment that passes the check once one has failed it.
	unverifiedWait time.Duration
	dsn            func() string
}

// submitAndWatch submits a prepared spec through the scheduler's HTTP API,
// prints submitted(id), and with a watch target (not nil) follows the
// experiment's events to its end and prints its results. It returns the
// experiment's id (also when watching fails).
func submitAndWatch(ctx context.Context, api *apiClient, p spec.Prepared, w *watchTarget, stdout, stderr io.Writer, submitted func(id string) string) (string, error) {
	since := time.Now().Add(-time.Second) // clocks differ; the watch replays from here
	id, err := submit(ctx, api, p.Resolved)
	if err != nil {
		return "", err
	}
	fmt.Fprintln(stdout, submitted(id))
	if w == nil {
		return id, nil
	}
	// The bus reports the events it skips as unverified in its log, which
	// is all the CLI keeps of it.
	unverified := newUnverifiedReport(w.trustFile, w.unverifiedWait, stderr)
	b, err := bus.Connect(ctx, w.natsURL, "greenflow-cli", zap.New(unverified), nil, w.natsOpts...)
	if err != nil {
		return id, err
	}
	defer b.Close()
	return id, watchAndReport(ctx, b, w.dsn, id, since, stdout, unverified)
}

// submit hands the resolved spec (already checked, --yes given where
// needed) to the scheduler's API, which records the experiment before it
// answers, so status and cancel find it at once. A trigger template is
// armed rather than run.
func submit(ctx context.Context, api *apiClient, resolved string) (string, error) {
	var rep schedapi.SubmitReply
	if err := api.do(ctx, http.MethodPost, "/v1/experiments?yes=true", "application/yaml", []byte(resolved), &rep); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	return rep.ID, nil
}
