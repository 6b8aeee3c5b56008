package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

// runDemo starts the dev stack in this process, runs one experiment end to
// end with live progress, prints the results table, writes CSV and JSON
// beside the state, and stops everything.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf specFlags
	sf.register(fs, "examples/uc3-local.yaml")
	stateDir := fs.String("state-dir", ".state/demo", "state dir (kept: 'greenflow results --state-dir' reads it later)")
	chDSN := fs.String("clickhouse-dsn", "", "use this ClickHouse instead of starting clickhouse-server")
	logLevel := fs.String("log-level", "warn", "service log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := sf.prepare(false)
	if err != nil {
		return err
	}
	began := time.Now()
	fmt.Fprintf(stdout, "starting the dev stack (embedded NATS JetStream, in-process Kafka, ClickHouse) in %s\n", *stateDir)
	st, err := devstack.Start(ctx, devstack.Options{StateDir: *stateDir, ClickHouseDSN: *chDSN, NATSPort: -1, UC3Command: selfUC3Command(),
		Logger: cliLogger(*logLevel)})
	if err != nil {
		return err
	}
	defer st.Close()
	runCtx, stopStack := context.WithCancel(ctx)
	stackDone := make(chan error, 1)
	go func() { stackDone <- st.Run(runCtx) }()
	defer func() {
		stopStack()
		<-stackDone
	}()
	b, err := bus.Connect(ctx, st.Endpoints.NATSURL, "greenflow-demo", zap.NewNop(), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	since := time.Now().Add(-time.Second)
	id, err := Submit(ctx, b, p.Experiment, p.Resolved)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "submitted experiment %s: %d runs of %s\n", id, p.Runs, sf.file)
	werr := watchAndReport(ctx, b, st.Endpoints.ClickHouseDSN, id, since, stdout)
	if werr != nil && !errors.Is(werr, context.Canceled) {
		return werr
	}
	rows, err := LoadResults(ctx, st.Store, id)
	if err == nil {
		for _, f := range []string{"csv", "json"} {
			path := filepath.Join(*stateDir, "results-"+id+"."+f)
			if out, err := os.Create(path); err == nil {
				_ = WriteResults(out, f, rows)
				_ = out.Close()
				fmt.Fprintf(stdout, "wrote %s\n", path)
			}
		}
	}
	fmt.Fprintf(stdout, "demo finished in %s; stopping the stack\n", time.Since(began).Round(100*time.Millisecond))
	return werr
}
