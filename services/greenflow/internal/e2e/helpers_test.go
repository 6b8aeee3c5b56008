// Package e2e holds the end-to-end tests: whole experiments through every
// service on real infrastructure (embedded NATS JetStream, franz-go's kfake
// Kafka, a real ClickHouse). The energy meter is the real /proc CPU model:
// this machine has no RAPL, which the results label as estimated.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestMain removes the services' binaries the tests built (387 MB; every
// run used to leave its copy in the temporary directory).
func TestMain(m *testing.M) {
	code := testenv.Run(m)
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// repoRoot is the module's root directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

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
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./services/...")
		cmd.Dir = repoRoot()
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
// does, and observes it (the messages of the given types): it returns the
// experiment id, its number of runs and the observer.
func submitExample(ctx context.Context, tb testing.TB, b *bus.Bus, sets []string, types ...events.Type) (string, int, *devstacktest.Observer) {
	tb.Helper()
	example, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "uc3-local.yaml"))
	require.NoError(tb, err)
	id, runs := devstacktest.Submit(ctx, tb, b, example, sets)
	return id, runs, devstacktest.Observe(tb, b, id, types...)
}

// phases are the overrides for runs as short as a test wants: no
// cool-down, and samples every 200 ms so even short windows hold several;
// more overrides may follow.
func phases(baseline, warmup, measure string, more ...string) []string {
	return append([]string{"spec.phases.baseline=" + baseline, "spec.phases.warmup=" + warmup, "spec.phases.measure=" + measure,
		"spec.phases.cooldown=0s", "spec.meters.interval=200ms"}, more...)
}

// startStack starts the dev stack (fast sampling and ticks, the UC-3
// processor built from this tree) without the named services, runs it
// until the test ends, and returns it with a bus client and a context for
// the test that ends within the given time.
func startStack(tb testing.TB, within time.Duration, skip ...string) (context.Context, *devstack.Stack, *bus.Bus) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	tb.Cleanup(cancel)
	o := devstacktest.Options(tb)
	o.Skip = skip
	o.UC3Command = []string{filepath.Join(binaries(tb), "uc3-processor")}
	st, b := devstacktest.Start(tb, o)
	return ctx, st, b
}

// process is a service binary running as a child of the test, killed if
// it is still running when the test ends.
type process struct {
	*exec.Cmd
	log    string        // its output (a file: the child writes it directly)
	exited chan struct{} // closed when it has exited; then err is its Wait error
	err    error
	done   atomic.Bool // it has exited
}

// startProcess starts the service binary name with args.
func startProcess(t testing.TB, name string, args ...string) *process {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	require.NoError(t, err)
	defer log.Close() // the child has its own descriptor
	p := &process{Cmd: exec.Command(filepath.Join(binaries(t), name), args...), log: log.Name(), exited: make(chan struct{})}
	p.Stdout, p.Stderr = log, log
	require.NoError(t, p.Start(), name)
	go func() { p.err = p.Wait(); p.done.Store(true); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.Process.Kill()
		<-p.exited
	})
	return p
}

// output is what the process has written so far.
func (p *process) output() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.log, err)
	}
	return string(b)
}

// running reports whether the process has not exited yet.
func (p *process) running() bool { return !p.done.Load() }

// stop sends sig and waits up to within for the process to exit; it
// returns whether it exited in time, and its exit error.
func (p *process) stop(sig os.Signal, within time.Duration) (bool, error) {
	if err := p.Process.Signal(sig); err != nil && p.running() {
		return false, fmt.Errorf("signal %v: %w", sig, err)
	}
	select {
	case <-p.exited:
		return true, p.err
	case <-time.After(within):
		return false, nil
	}
}

// publishMalformedProvision publishes a run.provision command its schema
// rejects: the provisioner dead-letters it with the reason.
func publishMalformedProvision(ctx context.Context, tb testing.TB, b *bus.Bus) {
	tb.Helper()
	bad := nats.NewMsg(bus.Subject(events.TypeRunProvision))
	bad.Header.Set(bus.HeaderType, string(events.TypeRunProvision))
	bad.Header.Set(bus.HeaderVersion, "1")
	bad.Data = []byte(`{"experiment_id":"x","run_id":"x-r0000","sut":{"template":"uc3-go"}}`)
	require.NoError(tb, b.PublishMsg(ctx, bad)) // signed: the provisioner refuses it for its body, not its signature
}
