package chaos_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lineLogger turns the suite's progress lines into test log lines.
type lineLogger struct{ t *testing.T }

func (l lineLogger) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestChaosShort is the short chaos suite of make test: every service as
// its own process, the NATS server and the Kafka broker too, two undisturbed
// runs, then one kill -9 of each service in the phase where its death does
// the most harm — the provisioner, load generator, collector and analyzer
// (it records the load's progress) while the run measures, the scheduler
// while it warms up (its deadline passes while it is down) — and a control
// run. (A kill of the analyzer while it analyses costs its consumer's ack
// wait, 15 s; make chaos has it.) The phases are fixed so that every CI run
// asks the same questions; offsets and restart delays come from the seed.
// It fails on any violation of the invariants (see loadtest/README.md).
// GREENFLOW_CHAOS_SEED repeats a run.
func TestChaosShort(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("GREENFLOW_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, "GREENFLOW_CHAOS_SEED: expected an integer")
		seed = v
	}
	results := filepath.Join(os.TempDir(), fmt.Sprintf("greenflow-chaos-short-%d", seed))
	require.NoError(t, os.RemoveAll(results))
	cfg := chaos.DefaultConfig(root)
	cfg.BinDir = filepath.Join(t.TempDir(), "bin")
	cfg.ResultsDir = results
	cfg.Seed = seed
	cfg.ClickHouseBase = testenv.ClickHouseBase(t)
	cfg.Schedule = []chaos.Pair{{Target: "provisioner", Phase: "measuring"}, {Target: "load-generator", Phase: "measuring"},
		{Target: "energy-collector", Phase: "measuring"}, {Target: "scheduler", Phase: "warmup"}, {Target: "analyzer", Phase: "measuring"}}
	cfg.References = 2
	cfg.Configs = []string{"500"}
	cfg.Phases = chaos.PhaseLengths{Baseline: time.Second, Warmup: time.Second, Measure: 5 * time.Second, Cooldown: time.Second}
	cfg.RunBound = 2 * time.Minute
	cfg.Progress = lineLogger{t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Logf("seed %d (GREENFLOW_CHAOS_SEED=%d repeats it); report in %s", seed, seed, results)
	rep, err := chaos.Run(ctx, cfg)
	require.NoError(t, err, "the chaos harness could not do its job (report in %s)", results)
	for _, v := range rep.Violations() {
		t.Errorf("violation: %s", v)
	}
	if t.Failed() {
		t.Logf("report, per-run facts and every process's log: %s", results)
	} else {
		_ = os.RemoveAll(results)
	}
}
