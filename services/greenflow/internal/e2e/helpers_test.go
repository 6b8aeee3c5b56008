// Package e2e holds the end-to-end tests: whole experiments through every
// service on real infrastructure (embedded NATS JetStream, franz-go's kfake
// Kafka, a real ClickHouse). The energy meter is the real /proc CPU model:
// this machine has no RAPL, which the results label as estimated.
package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/testenv"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds every service binary once per test run.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "greenflow-e2e-bin-")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./services/...")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

// submitExample submits examples/uc3-local.yaml with overrides, as the CLI
// does, and returns the experiment id and its number of runs.
func submitExample(ctx context.Context, tb testing.TB, b *bus.Bus, sets []string) (string, int) {
	tb.Helper()
	p, err := spec.Prepare(exampleSpec(tb), sets, false)
	require.NoError(tb, err)
	id, err := cli.Submit(ctx, b, p.Experiment, p.Resolved)
	require.NoError(tb, err)
	return id, p.Runs
}

func exampleSpec(t testing.TB) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "examples", "uc3-local.yaml"))
	require.NoError(t, err)
	return b
}

// shortPhases keeps the runs short but long enough for several samples.
var shortPhases = []string{"spec.phases.baseline=1s", "spec.phases.warmup=1s", "spec.phases.measure=4s", "spec.phases.cooldown=0s",
	"spec.meters.interval=200ms"}

// observer records what the services announced.
type observer struct {
	mu       sync.Mutex
	finished map[string]events.LoadFinished
	analyzed map[string]events.RunAnalyzed
	final    string
}

func observe(ctx context.Context, t *testing.T, b *bus.Bus, experimentID string) *observer {
	o := &observer{finished: map[string]events.LoadFinished{}, analyzed: map[string]events.RunAnalyzed{}}
	go func() {
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), []events.Type{events.TypeLoadFinished, events.TypeRunAnalyzed, events.TypeExperimentState},
			func(d bus.Delivery) {
				if d.Headers.Get(bus.HeaderExperiment) != experimentID {
					return
				}
				o.mu.Lock()
				defer o.mu.Unlock()
				switch m := d.Msg.(type) {
				case *events.LoadFinished:
					o.finished[m.RunID] = *m
				case *events.RunAnalyzed:
					o.analyzed[m.RunID] = *m
				case *events.ExperimentState:
					if m.State == "done" || m.State == "failed" || m.State == "cancelled" {
						o.final = m.State
					}
				}
			})
	}()
	return o
}

func (o *observer) state() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.final
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// startStack starts the dev stack (fast sampling and ticks) on the test
// ClickHouse without the named services, runs it until the test ends, and
// returns it with a bus client.
func startStack(tb testing.TB, skip ...string) (*devstack.Stack, *bus.Bus) {
	tb.Helper()
	bin := binaries(tb)
	ctx := context.Background()
	st, err := devstack.Start(ctx, devstack.Options{
		StateDir: tb.TempDir(), ClickHouseDSN: testenv.ClickHouseDSN(tb), NATSPort: -1, Skip: skip,
		UC3Command: []string{filepath.Join(bin, "uc3-processor")}, Logger: testenv.Logger(tb),
		Collector: func(c *collectorapp.Config) {
			c.Interval = 200 * time.Millisecond
			c.FlushInterval = 200 * time.Millisecond
		},
		Scheduler: func(c *schedulerapp.Config) { c.Tick = 20 * time.Millisecond },
	})
	require.NoError(tb, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	b, err := bus.Connect(ctx, st.Endpoints.NATSURL, "e2e-test", zap.NewNop(), nil)
	if err != nil {
		stop()
		<-done
		st.Close()
		require.NoError(tb, err)
	}
	tb.Cleanup(func() {
		b.Close()
		stop()
		require.NoError(tb, <-done)
		st.Close()
	})
	return st, b
}
