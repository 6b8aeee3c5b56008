package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/store"
	"go.uber.org/zap"
)

// The analysis commands' flags and store opening; what they compute and
// write is pkg/report's, shared with the web console.

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("export", stderr)
	dir := fs.String("dir", "", "directory to write the CSV files to (created if missing)")
	noSamples := fs.Bool("no-samples", false, "skip samples.csv")
	pos, st, closeStore, err := openAnalysis(ctx, fs, c, args, 1, "expected one EXPERIMENT id", func() error {
		if *dir == "" {
			return errors.New("--dir: an output directory is required")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer closeStore()
	files, err := report.Export(ctx, st, pos[0], *dir, !*noSamples)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	return nil
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newAnalysisFlags("report", stderr)
	out := fs.String("o", "", "output file (default report-EXPERIMENT.html; - for stdout)")
	maxRuns := fs.Int("max-runs", 8, "power-over-time plots for at most this many runs (first repetition of each configuration first)")
	pos, st, closeStore, err := openAnalysis(ctx, fs, c, args, 1, "expected one EXPERIMENT id")
	if err != nil {
		return err
	}
	defer closeStore()
	page, err := report.Report(ctx, st, pos[0], *maxRuns)
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err := stdout.Write(page)
		return err
	}
	path := *out
	if path == "" {
		path = "report-" + pos[0] + ".html"
	}
	if err := os.WriteFile(path, page, 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", path)
	return nil
}

func runResults(ctx context.Context, args []string, stdout io.Writer) error {
	var format, by string
	c, id, err := parseExperimentArgs("results", args, func(fs *flag.FlagSet) {
		fs.StringVar(&format, "format", "table", "table, csv or json")
		fs.StringVar(&by, "by", "run", "run: a row per run (the table adds the per-configuration statistics when runs repeat); "+
			"config: per configuration, n, mean, SD, CI, CV flag, lag SLO verdict and Pareto membership of every metric")
	})
	if err != nil {
		return err
	}
	if by != "run" && by != "config" {
		return fmt.Errorf("--by %q: expected run or config", by)
	}
	if format != "table" && format != "csv" && format != "json" {
		return fmt.Errorf("--format %q: expected table, csv or json", format)
	}
	st, closeStore, err := openStore(ctx, &c)
	if err != nil {
		return err
	}
	defer closeStore()
	rows, err := report.LoadResults(ctx, st, id)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("experiment %s: no runs stored", id)
	}
	if by == "config" {
		return report.WriteConfigResults(stdout, format, id, rows)
	}
	if err := report.WriteResults(stdout, format, rows); err != nil {
		return err
	}
	if format == "table" {
		return report.WriteCapacity(ctx, stdout, st, id)
	}
	return nil
}

// openAnalysis parses an analysis command's flags and its n positional
// arguments (wrong says what was expected), runs checks on the flags, and
// opens the store; the returned function closes it.
func openAnalysis(ctx context.Context, fs *flag.FlagSet, c *connFlags, args []string, n int, wrong string,
	checks ...func() error) ([]string, *store.Store, func(), error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(pos) != n {
		return nil, nil, nil, errors.New(wrong)
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return nil, nil, nil, err
		}
	}
	st, closeStore, err := openStore(ctx, c)
	return pos, st, closeStore, err
}

// openStore opens the ClickHouse the flags point at; without a running dev
// stack or DSN it starts a server on the dev state's data for the duration
// of the command. The returned function closes everything.
func openStore(ctx context.Context, c *connFlags) (*store.Store, func(), error) {
	if err := c.resolve(false); err != nil && c.clickhouseDSNFile != "" {
		return nil, nil, err // an unreadable --clickhouse-dsn-file; no dev stack is fine
	}
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
		dsn = srv.ReaderDSN("greenflow")
		if c.writer {
			dsn = srv.DSN("greenflow")
		}
	}
	open := store.OpenReadOnly
	if c.writer {
		open = store.Open
	}
	st, err := open(ctx, dsn, zap.NewNop())
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return st, func() { _ = st.Close(); stopServer() }, nil
}
