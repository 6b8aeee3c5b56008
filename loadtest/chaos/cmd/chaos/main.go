// Command chaos runs GreenFlow's chaos suite (make chaos): the services as
// separate processes, one kill -9 per short run in every phase, and the
// invariants checked from outside. It exits 1 when a violation is
// confirmed, 2 when the harness itself could not do its job.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/pkg/svcmain"
)

func main() { os.Exit(run()) }

func run() int {
	root, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	cfg := chaos.DefaultConfig(root)
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.StringVar(&cfg.Root, "root", cfg.Root, "repository root")
	fs.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "where the binaries are built")
	fs.BoolVar(&cfg.Build, "build", cfg.Build, "build the binaries first")
	fs.StringVar(&cfg.ResultsDir, "results", cfg.ResultsDir, "results directory (report.json, summary.txt, kills.csv, runs.csv, table.csv, logs)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the kill schedule (printed; pass it again to repeat a schedule)")
	faults := fs.String("faults", strings.Join(cfg.Faults, ","), "segments, comma-separated: services, infra (NATS and Kafka restarts), replicas (two instances, kill one), "+
		"kube (kubernetes runs on envtest: API server outages in provisioning and teardown, the provisioner's role without delete on namespaces)")
	fs.IntVar(&cfg.KubeFaults, "kube-faults", cfg.KubeFaults, "kube segment: times each kube fault is delivered")
	fs.DurationVar(&cfg.KubeOutage, "kube-outage", cfg.KubeOutage, "kube segment: how long the API server stays down")
	fs.IntVar(&cfg.KubeControlEvery, "kube-control-every", cfg.KubeControlEvery, "kube segment: a control run after every that many faults (0: none)")
	kubeSchedule := fs.String("kube-schedule", "", "kube segment: fixed faults instead of the shuffled plan: kube-apiserver:provisioning,kube-apiserver:teardown,kube-rbac:teardown")
	fs.IntVar(&cfg.Kills, "kills", cfg.Kills, "service kills (0: every service in every phase)")
	fs.IntVar(&cfg.InfraKills, "infra-kills", cfg.InfraKills, "kills of the NATS server and, as many, of the Kafka broker")
	fs.IntVar(&cfg.ReplicaKills, "replica-kills", cfg.ReplicaKills, "kills of one of two instances")
	fs.IntVar(&cfg.References, "references", cfg.References, "undisturbed runs per configuration per segment (at least 2)")
	fs.IntVar(&cfg.ControlEvery, "control-every", cfg.ControlEvery, "an undisturbed control run after every that many kills (0: none)")
	fs.Float64Var(&cfg.MaxPressure, "max-pressure", cfg.MaxPressure, "runs whose window had more CPU pressure (PSI share) are not compared with the references (0: compare all)")
	configs := fs.String("configs", strings.Join(cfg.Configs, ","), "workload.sensors values (configurations)")
	fs.DurationVar(&cfg.Phases.Baseline, "baseline", cfg.Phases.Baseline, "baseline phase")
	fs.DurationVar(&cfg.Phases.Warmup, "warmup", cfg.Phases.Warmup, "warm-up phase")
	fs.DurationVar(&cfg.Phases.Measure, "measure", cfg.Phases.Measure, "measured phase")
	fs.DurationVar(&cfg.Phases.Cooldown, "cooldown", cfg.Phases.Cooldown, "cool-down phase")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "sampling interval")
	fs.DurationVar(&cfg.RunBound, "run-bound", cfg.RunBound, "a run not final this long after its submission is stuck")
	fs.StringVar(&cfg.ClickHouseBase, "clickhouse", cfg.ClickHouseBase, "a running ClickHouse (clickhouse://127.0.0.1:9000); empty starts one")
	fs.BoolVar(&cfg.KafkaInMemory, "kafka-in-memory", cfg.KafkaInMemory, "the broker keeps nothing across a restart")
	args := fs.String("service-args", "", "extra service arguments: 'service=--flag value;service2=--flag' ({state}: the instance's state dir)")
	deadline := fs.Duration("deadline", 40*time.Minute, "the whole suite stops after this")
	rejudge := fs.String("rejudge", "", "judge a saved report.json again (with -max-pressure) instead of running; writes the result under -results")
	schedule := fs.String("schedule", "", "fixed service kills instead of drawn ones: target:phase,... (e.g. provisioner:measuring,scheduler:warmup)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cfg.Faults = svcmain.SplitList(*faults)
	if *schedule != "" {
		if cfg.Schedule, err = chaos.ParseSchedule(*schedule); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
	}
	if *kubeSchedule != "" {
		if cfg.KubeSchedule, err = chaos.ParseSchedule(*kubeSchedule); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
	}
	cfg.Configs = svcmain.SplitList(*configs)
	if *args != "" {
		cfg.Args = map[string][]string{}
		for _, part := range strings.Split(*args, ";") {
			svc, a, ok := strings.Cut(part, "=")
			if !ok {
				fmt.Fprintf(os.Stderr, "chaos: --service-args: %q: expected service=arguments\n", part)
				return 2
			}
			cfg.Args[strings.TrimSpace(svc)] = append(cfg.Args[strings.TrimSpace(svc)], strings.Fields(a)...)
		}
	}
	if !filepath.IsAbs(cfg.ResultsDir) {
		cfg.ResultsDir = filepath.Join(root, cfg.ResultsDir)
	}
	if *rejudge != "" {
		return runRejudge(*rejudge, cfg)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *deadline)
	defer cancel()
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: harness:", err)
		return 2
	}
	fmt.Printf("report: %s\n", cfg.ResultsDir)
	if n := len(rep.Violations()); n > 0 {
		fmt.Printf("FAIL: %d confirmed violation(s)\n", n)
		return 1
	}
	if h := rep.HarnessErrors(); len(h) > 0 {
		fmt.Printf("FAIL: no violation, but %d harness problem(s) left questions unasked:\n  %s\n", len(h), strings.Join(h, "\n  "))
		return 2
	}
	fmt.Println("PASS: no violation")
	return 0
}

// runRejudge judges a saved report again: the bands from the references
// and the clean control runs, the overload threshold of this invocation.
func runRejudge(path string, cfg chaos.Config) int {
	rep, err := chaos.ReadReport(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	tol := chaos.DefaultTolerance(rep.Config.Interval.Milliseconds())
	for i := range rep.Segments {
		n := chaos.Rejudge(&rep.Segments[i], tol, cfg.MaxPressure)
		fmt.Printf("segment %s: bands from %d undisturbed runs\n", rep.Segments[i].Name, n)
	}
	rep.Config.MaxPressure = cfg.MaxPressure
	if err := os.MkdirAll(cfg.ResultsDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	if err := chaos.WriteReport(cfg.ResultsDir, rep); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	chaos.PrintSummary(os.Stdout, rep)
	fmt.Printf("report: %s\n", cfg.ResultsDir)
	if len(rep.Violations()) > 0 {
		return 1
	}
	return 0
}
