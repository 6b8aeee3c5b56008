// Package cli implements the greenflow command line. Its commands, and the
// files that hold them:
//
//	dev               every service in one process (dev.go)
//	demo              the dev stack and one experiment, end to end (dev.go)
//	validate          check a spec and render the system under test (submit.go)
//	submit            publish an experiment; --watch follows it (submit.go, watch.go)
//	results           per-run results and per-configuration statistics (analysis_cmds.go)
//	compare           Welch's t-tests between experiments or configurations, two or more (compare.go, compare_many.go)
//	export            tidy CSV files for a notebook (analysis_cmds.go)
//	report            a self-contained HTML report with SVG plots (analysis_cmds.go)
//	list              experiments and their state, from the scheduler (status.go)
//	status            each run's phase and progress, from the scheduler (status.go)
//	cancel            cancel an experiment (status.go)
//	token             create, list and revoke API tokens (api.go)
//	trigger           list and disarm armed templates (trigger.go)
//	dead-letters      list, show and replay what no consumer could process (deadletters.go)
//	nats-config       nats-server users and permissions for a deployment (natsconfig.go)
//	nats declare      every stream and bucket, as admin (natsconfig.go)
//	clickhouse-users  ClickHouse users.xml for a deployment (clickhouseusers.go)
//	cluster           the platform on a Kubernetes cluster (cluster.go)
//	prune             drop days of samples that belong to no run (prune.go)
//	testbed           reserve a testbed, make it k3s, deploy, release (testbed.go)
//	version           the build's version and commit
//	help              the usage
//
// (main.go runs "greenflow uc3-processor" — the reference UC-3 processor,
// which the local provisioner starts — before the CLI sees it.)
//
// flags.go holds the flags the commands share (where to find a dev stack,
// its HTTP API and a token, the spec, experiment ids); api.go the client of
// the scheduler's HTTP API that submit, list, status, cancel, trigger and
// token use. What results, export and report compute and write is
// pkg/report's, shared with the web console. Every query goes through
// pkg/store, and result metrics are named by pkg/results.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/version"
)

const usage = `greenflow — reproducible energy experiments on stream processing systems

Usage:
  greenflow dev      [--state-dir DIR] [--ephemeral] [--clickhouse-dsn DSN]   every service in one process
  greenflow demo     [-f SPEC] [--state-dir DIR]                               dev stack + one experiment, end to end
  greenflow validate -f SPEC [--set path=value]...
  greenflow submit   -f SPEC [--set path=value]... [--watch] [--yes]
  greenflow results  EXPERIMENT [--format table|csv|json] [--by run|config]   per-run results, or per configuration: n, mean, SD, 95% CI
  greenflow compare  A B [C …] [--plot FILE.svg]                               Welch's t-test between experiments or configurations
  greenflow export   EXPERIMENT --dir DIR                                      tidy CSV files for a notebook
  greenflow report   EXPERIMENT [-o FILE]                                      self-contained HTML report with SVG plots
  greenflow list                                                               experiments and their state
  greenflow status   EXPERIMENT                                                each run's phase and progress
  greenflow cancel   EXPERIMENT [--reason TEXT]
  greenflow token    create --name NAME --role viewer|operator|admin [--expires 720h] [--nats]   prints the token once
                                                                               (--nats: over NATS, no token: the first admin token)
  greenflow token    list                                                      tokens, never their secrets
  greenflow token    revoke NAME|ID
  greenflow trigger  list                                                      armed templates: what fires them, how often and when they last did
  greenflow trigger  disarm NAME                                               stop a template firing (submitting it again re-arms it)
  greenflow dead-letters [--experiment ID] [--consumer NAME] [--since 24h|TIME] [--format table|json|csv]
                                                                               what no consumer could process: when, who gave it up, why
  greenflow dead-letters show SEQ [--format table|json]                        one dead letter with its headers and body
  greenflow dead-letters replay SEQ                                            publish it again as first published (admin's NATS user)
  greenflow nats-config --creds-dir DIR                                         nats-server users and permissions for a deployment
  greenflow nats declare [--nats-url URL --nats-nkey-file ADMIN.nk] [--keep]    declare every stream and bucket as admin (no service may)
  greenflow clickhouse-users --secrets-dir DIR [--network CIDR]...             ClickHouse users.xml (hashes only) for a deployment
  greenflow cluster up|status|down [--kubeconfig F] [--overlay single-node|testbed|DIR]   the platform on a Kubernetes cluster
  greenflow prune    [--older-than 720h] [--dry-run] [--format table|json]    drop days of samples no run touches
  greenflow testbed  plan|up|status|down -f TESTBED.yaml                       reserve Grid'5000 nodes, k3s, deploy, release (testbed.go)
  greenflow version

submit, list, status, cancel, trigger and token use the scheduler's HTTP API with a bearer token:
--api-url and --token, else GREENFLOW_TOKEN, else a running 'greenflow dev' through its state
dir (its address, and the admin token it wrote there). results and the analysis commands read
ClickHouse (--clickhouse-dsn, or the dev stack's); watch follows events on NATS (--nats-url), and
dead-letters reads NATS's dead-letter stream as the greenflow command's NATS user (--nats-nkey-file).
`

// command runs one subcommand with the arguments after its name.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// commands are the subcommands by name (Main answers version and help
// itself).
var commands = map[string]command{
	"dev":              runDev,
	"demo":             runDemo,
	"validate":         func(_ context.Context, args []string, stdout, _ io.Writer) error { return runValidate(args, stdout) },
	"submit":           runSubmit,
	"results":          toStdout(runResults),
	"cancel":           toStdout(runCancel),
	"token":            runToken,
	"trigger":          runTrigger,
	"dead-letters":     runDeadLetters,
	"list":             toStdout(runList),
	"status":           toStdout(runStatusCmd),
	"nats-config":      runNATSConfig,
	"nats":             runNATS,
	"clickhouse-users": runClickHouseUsers,
	"cluster":          runCluster,
	"prune":            runPrune,
	"compare":          runCompare,
	"export":           runExport,
	"report":           runReport,
	"testbed":          runTestbed,
}

// toStdout makes a command of one that writes only to stdout.
func toStdout(run func(ctx context.Context, args []string, stdout io.Writer) error) command {
	return func(ctx context.Context, args []string, stdout, _ io.Writer) error { return run(ctx, args, stdout) }
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := service.SignalContext()
	defer stop()
	var err error
	switch cmd, ok := commands[args[0]]; {
	case ok:
		err = cmd(ctx, args[1:], stdout, stderr)
	case args[0] == "version":
		fmt.Fprintf(stdout, "greenflow %s (commit %s; from %s)\n", version.Version, version.Commit(), version.CommitSource())
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "greenflow: unknown command %q\n\n%s", args[0], usage)
		return 2
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
