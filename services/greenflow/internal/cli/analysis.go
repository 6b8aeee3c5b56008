package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/store"
)

// command is one CLI subcommand.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// analysisCommand returns the analysis subcommands (compare, export, report);
// nil for an unknown name.
func analysisCommand(name string) command {
	switch name {
	case "compare":
		return runCompare
	case "export":
		return runExport
	case "report":
		return runReport
	}
	return nil
}

// analysisUsage lists the analysis commands; each prints it on -h.
const analysisUsage = `Analysis commands:
  greenflow compare  A B [--experiment EXP] [--level 0.95]   Welch t-test per headline metric: two experiments,
                                                             or two config hashes (prefixes) within --experiment
  greenflow export   EXPERIMENT --dir DIR                    tidy CSV: runs, phases, targets, results, samples, summary
  greenflow report   EXPERIMENT [-o FILE] [--max-runs N]     self-contained HTML report with SVG plots

They find ClickHouse like 'greenflow results': a running 'greenflow dev' through
its state dir, --clickhouse-dsn, or the dev state's ClickHouse data.
`

// newAnalysisFlags returns a flag set that prints the analysis usage on -h.
func newAnalysisFlags(name string, stderr io.Writer) (*flag.FlagSet, *connFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c connFlags
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, analysisUsage)
		fmt.Fprintf(stderr, "\nFlags of %s:\n", name)
		fs.PrintDefaults()
	}
	return fs, &c
}

// openStore opens the ClickHouse the flags point at; without a running dev
// stack or DSN it starts a server on the dev state's data for the duration
// of the command. The returned function closes everything.
func openStore(ctx context.Context, c *connFlags) (*store.Store, func(), error) {
	_ = c.resolve(false)
	dsn := c.clickhouseDSN
	stopServer := func() {}
	if dsn == "" {
		dir := filepath.Join(c.stateDir, "clickhouse")
		if _, err := os.Stat(dir); err != nil {
			return nil, nil, fmt.Errorf("no running 'greenflow dev', no --clickhouse-dsn, and no ClickHouse data in %s", dir)
		}
		srv, err := chserver.Start(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		stopServer = func() { _ = srv.Stop() }
		dsn = srv.DSN("greenflow")
	}
	st, err := store.Open(ctx, dsn, zap.NewNop())
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return st, func() { _ = st.Close(); stopServer() }, nil
}
