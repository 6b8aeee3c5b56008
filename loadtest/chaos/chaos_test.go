package chaos_test

import (
	"testing"
	"time"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/loadtest/chaos/chaostest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

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
	chaostest.Run(t, "chaos-short", 5*time.Minute, func(cfg *chaos.Config) {
		cfg.Schedule = []chaos.Pair{{Target: "provisioner", Phase: "measuring"}, {Target: "load-generator", Phase: "measuring"},
			{Target: "energy-collector", Phase: "measuring"}, {Target: "scheduler", Phase: "warmup"}, {Target: "analyzer", Phase: "measuring"}}
		cfg.References = 2
		cfg.Configs = []string{"500"}
		cfg.Phases = chaos.PhaseLengths{Baseline: time.Second, Warmup: time.Second, Measure: 5 * time.Second, Cooldown: time.Second}
		cfg.RunBound = 2 * time.Minute
	})
}
