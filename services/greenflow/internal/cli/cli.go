// Package cli implements the greenflow command: dev (every service in one
// process), demo, validate, submit (with --watch), results and cancel.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/version"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
)

const usage = `greenflow — reproducible energy experiments on stream processing systems

Usage:
  greenflow dev      [--state-dir DIR] [--ephemeral] [--clickhouse-dsn DSN]   every service in one process
  greenflow demo     [-f SPEC] [--state-dir DIR]                               dev stack + one experiment, end to end
  greenflow validate -f SPEC [--set path=value]...
  greenflow submit   -f SPEC [--set path=value]... [--watch] [--yes]
  greenflow results  EXPERIMENT [--format table|csv|json]                     per-run results and per-configuration mean ± 95% CI
  greenflow compare  A B                                                       Welch's t-test between two experiments or configurations
  greenflow export   EXPERIMENT --dir DIR                                      tidy CSV files for a notebook
  greenflow report   EXPERIMENT [-o FILE]                                      self-contained HTML report with SVG plots
  greenflow list                                                               experiments and their state
  greenflow status   EXPERIMENT                                                each run's phase and progress
  greenflow cancel   EXPERIMENT [--reason TEXT]
  greenflow version

submit, list, status, results and cancel find a running 'greenflow dev' through its state
dir, or take --nats-url and --clickhouse-dsn.
`

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := service.SignalContext()
	defer stop()
	var err error
	switch args[0] {
	case "dev":
		err = runDev(ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "validate":
		err = runValidate(args[1:], stdout)
	case "submit":
		err = runSubmit(ctx, args[1:], stdout, stderr)
	case "results":
		err = runResults(ctx, args[1:], stdout)
	case "cancel":
		err = runCancel(ctx, args[1:], stdout)
	case "list":
		err = runList(ctx, args[1:], stdout)
	case "status":
		err = runStatusCmd(ctx, args[1:], stdout)
	case "version":
		fmt.Fprintf(stdout, "greenflow %s (commit %s)\n", version.Version, version.Commit())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		cmd := analysisCommand(args[0])
		if cmd == nil {
			fmt.Fprintf(stderr, "greenflow: unknown command %q\n\n%s", args[0], usage)
			return 2
		}
		err = cmd(ctx, args[1:], stdout, stderr)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "greenflow %s: %v\n", args[0], err)
		var p spec.Problems
		if errors.As(err, &p) || errors.Is(err, spec.ErrTooManyRuns) {
			return 2
		}
		return 1
	}
	return 0
}

func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "greenflow")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "greenflow")
	}
	return ".greenflow"
}

type connFlags struct {
	stateDir, natsURL, clickhouseDSN string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "state dir of a running 'greenflow dev'")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS URL (default: from the dev state dir)")
	fs.StringVar(&c.clickhouseDSN, "clickhouse-dsn", "", "ClickHouse DSN (default: from the dev state dir)")
}

// resolve fills missing addresses from a running dev stack.
func (c *connFlags) resolve(needNATS bool) error {
	if c.natsURL != "" && c.clickhouseDSN != "" {
		return nil
	}
	ep, err := devstack.ReadEndpoints(c.stateDir)
	if err != nil {
		if c.natsURL == "" && needNATS {
			return fmt.Errorf("no running 'greenflow dev' found in %s and no --nats-url given", c.stateDir)
		}
		return nil
	}
	if c.natsURL == "" {
		c.natsURL = ep.NATSURL
	}
	if c.clickhouseDSN == "" {
		c.clickhouseDSN = ep.ClickHouseDSN
	}
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cliLogger(level string) *zap.Logger {
	l, err := service.NewLogger(level, true)
	if err != nil {
		return zap.NewNop()
	}
	return l
}

func selfUC3Command() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, "uc3-processor"}
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir(), "JetStream store and ClickHouse data (kept across restarts)")
	ephemeral := fs.Bool("ephemeral", false, "delete the state dir on exit")
	chDSN := fs.String("clickhouse-dsn", "", "use this ClickHouse instead of starting clickhouse-server")
	natsPort := fs.Int("nats-port", 4222, "NATS port on 127.0.0.1 (-1: any free port)")
	kafkaPort := fs.Int("kafka-port", 9092, "in-process Kafka port on 127.0.0.1 (0: any free port)")
	httpAddr := fs.String("http-addr", "127.0.0.1:9464", "/metrics and /healthz address (empty disables)")
	logLevel := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := cliLogger(*logLevel)
	st, err := devstack.Start(ctx, devstack.Options{StateDir: *stateDir, Ephemeral: *ephemeral, ClickHouseDSN: *chDSN, NATSPort: *natsPort,
		KafkaPort: *kafkaPort, HTTPAddr: *httpAddr, UC3Command: selfUC3Command(), Logger: logger})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stdout, "greenflow dev is running (Ctrl-C stops it)\n  NATS:       %s\n  Kafka:      %s\n  ClickHouse: %s\n  metrics:    http://%s/metrics\n  state:      %s\n",
		st.Endpoints.NATSURL, strings.Join(st.Endpoints.KafkaBrokers, ","), st.Endpoints.ClickHouseDSN, *httpAddr, *stateDir)
	return st.Run(ctx)
}

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

// specFlags are the -f and --set flags of the commands that read a spec.
type specFlags struct {
	file string
	sets stringList
}

func (f *specFlags) register(fs *flag.FlagSet, defaultFile string) {
	fs.StringVar(&f.file, "f", defaultFile, "experiment spec file (YAML or JSON; - for standard input)")
	fs.Var(&f.sets, "set", "override a spec field: path=value (repeatable)")
}

// prepare reads and validates the spec (see spec.Prepare).
func (f *specFlags) prepare(yes bool) (spec.Prepared, error) {
	data, err := f.read()
	if err != nil {
		return spec.Prepared{}, err
	}
	return spec.Prepare(data, f.sets, yes)
}

// read reads the spec file (or standard input).
func (f *specFlags) read() ([]byte, error) {
	if f.file == "" {
		return nil, errors.New("-f: a spec file is required")
	}
	var data []byte
	var err error
	if f.file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(f.file)
	}
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	return data, nil
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
	b, err := bus.Connect(ctx, c.natsURL, "greenflow-cli", zap.NewNop(), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	since := time.Now().Add(-time.Second)
	id, err := Submit(ctx, b, p.Experiment, p.Resolved)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "submitted experiment %s (%d runs)\n", id, p.Runs)
	if !*watch {
		return nil
	}
	return watchAndReport(ctx, b, c.clickhouseDSN, id, since, stdout)
}

func watchAndReport(ctx context.Context, b *bus.Bus, dsn, id string, since time.Time, stdout io.Writer) error {
	final, err := Watch(ctx, b, id, since, stdout)
	if err != nil {
		return err
	}
	if dsn == "" {
		fmt.Fprintln(stdout, "no ClickHouse DSN known: run 'greenflow results' with --clickhouse-dsn")
		return nil
	}
	st, err := store.Open(ctx, dsn, zap.NewNop())
	if err != nil {
		return err
	}
	defer st.Close()
	rows, err := LoadResults(ctx, st, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nResults of %s (measured window only):\n", id)
	if err := WriteResults(stdout, "table", rows); err != nil {
		return err
	}
	if err := WriteCapacity(ctx, stdout, st, id); err != nil {
		return err
	}
	if final != "done" {
		return fmt.Errorf("experiment %s ended %s", id, final)
	}
	return nil
}

// parseExperimentArgs parses a command taking one EXPERIMENT id (before or
// after the flags) and the connection flags; extra registers its own flags.
func parseExperimentArgs(name string, args []string, extra func(*flag.FlagSet)) (connFlags, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c connFlags
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(reorder(args)); err != nil {
		return c, "", err
	}
	if fs.NArg() != 1 {
		return c, "", errors.New("expected one EXPERIMENT id")
	}
	return c, fs.Arg(0), nil
}

func runResults(ctx context.Context, args []string, stdout io.Writer) error {
	var format string
	c, id, err := parseExperimentArgs("results", args, func(fs *flag.FlagSet) {
		fs.StringVar(&format, "format", "table", "table, csv or json")
	})
	if err != nil {
		return err
	}
	st, closeStore, err := openStore(ctx, &c)
	if err != nil {
		return err
	}
	defer closeStore()
	rows, err := LoadResults(ctx, st, id)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("experiment %s: no runs stored", id)
	}
	if err := WriteResults(stdout, format, rows); err != nil {
		return err
	}
	if format == "table" {
		return WriteCapacity(ctx, stdout, st, id)
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
	if err := c.resolve(true); err != nil {
		return err
	}
	b, err := bus.Connect(ctx, c.natsURL, "greenflow-cli", zap.NewNop(), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Publish(ctx, events.ExperimentCancel{ExperimentID: id, Reason: reason}, ""); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cancel requested for %s\n", id)
	return nil
}

// reorder moves a leading positional argument after the flags, so both
// "results ID --format csv" and "results --format csv ID" work.
func reorder(args []string) []string {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return append(args[1:], args[0])
	}
	return args
}
