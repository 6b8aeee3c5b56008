// Package local is the provisioner's local backend: it runs a run's system
// under test as processes of this machine and reports their pids as
// measurement targets. Each SUT runs under a small shell shim in a session
// and process group of its own, with no parent-death signal, its output in
// a log file and its exit status written to a file by the shim: the SUT
// outlives a provisioner that dies, and whoever looks next still learns how
// it ended.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/uc3cmd"
)

// Config configures the local backend.
type Config struct {
	// UC3Command starts the reference UC-3 processor; the backend appends
	// --brokers, --input, --output, --group and template parameters.
	UC3Command []string `yaml:"uc3Command"`
	// StartupGrace is how long a process must stay up to count as started.
	StartupGrace time.Duration `yaml:"startupGrace"`
	// StopTimeout is how long teardown waits after SIGTERM before SIGKILL.
	StopTimeout time.Duration `yaml:"stopTimeout"`
	// Node names this machine in targets.
	Node string `yaml:"node"`
	// StateDir holds each run's log and exit status
	// (runs/<run>/sut.log, runs/<run>/exit-status).
	StateDir string `yaml:"stateDir"`
	// LivenessPoll is how often a running SUT is checked for having exited.
	LivenessPoll time.Duration `yaml:"livenessPoll"`
	// StopOnShutdown stops every SUT this backend watches when the
	// provisioner stops (greenflow dev, whose Kafka and NATS stop with it);
	// otherwise they keep running for the next provisioner to adopt.
	StopOnShutdown bool `yaml:"stopOnShutdown"`
}

// DefaultStateDir is where a provisioner keeps run logs unless told
// otherwise: ~/.local/state/greenflow/provisioner.
func DefaultStateDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "greenflow-provisioner")
	}
	return filepath.Join(home, ".local", "state", "greenflow", "provisioner")
}

// ExitFunc is told when a run's process exits on its own (a crash).
type ExitFunc func(experimentID, runID, reason string)

// Backend runs processes; safe for concurrent use.
type Backend struct {
	cfg    Config
	logger *zap.Logger
	onExit ExitFunc
	proc   procfs

	mu   sync.Mutex
	runs map[string]*run
}

// run is a started SUT.
type run struct {
	experimentID string
	shim         started
	files        Files
	targets      []events.Target
	stopping     bool
	done         chan struct{} // closed when the shim is gone
	stopWatch    context.CancelFunc
}

// New builds the backend; no I/O.
func New(cfg Config, logger *zap.Logger, onExit ExitFunc) *Backend {
	if cfg.StartupGrace == 0 {
		cfg.StartupGrace = 300 * time.Millisecond
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.LivenessPoll == 0 {
		cfg.LivenessPoll = 250 * time.Millisecond
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir()
	}
	return &Backend{cfg: cfg, logger: logger.With(zap.String("component", "local-backend")), onExit: onExit,
		proc: procfs{root: "/proc"}, runs: map[string]*run{}}
}

// Command builds the command line of a run.
func (b *Backend) Command(p events.RunProvision) ([]string, error) {
	switch p.SUT.Template {
	case "uc3-go":
		if len(b.cfg.UC3Command) == 0 {
			return nil, errors.New("template uc3-go: no UC-3 processor command configured (--uc3-command)")
		}
		flags, err := uc3cmd.Flags(p, strings.Join(p.Kafka.Brokers, ","), "")
		if err != nil {
			return nil, err
		}
		return append(append([]string{}, b.cfg.UC3Command...), flags...), nil
	case "command":
		if len(p.SUT.Command) == 0 {
			return nil, errors.New("template command: sut.command is empty")
		}
		return p.SUT.Command, nil
	default:
		return nil, fmt.Errorf("template %q cannot run on the local backend (expected uc3-go or command)", p.SUT.Template)
	}
}

// env is the SUT's environment: ours plus the run's markers.
func env(p events.RunProvision, platform string) []string {
	k, _ := json.Marshal(p.Kafka)
	return append(os.Environ(), EnvRunID+"="+p.RunID, EnvExperimentID+"="+p.ExperimentID, EnvPlatform+"="+platform, EnvKafka+"="+string(k))
}

// Provision starts the run's process; a second call for a running run
// returns the same targets.
func (b *Backend) Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error) {
	b.mu.Lock()
	if r, ok := b.runs[p.RunID]; ok {
		b.mu.Unlock()
		return r.targets, nil
	}
	b.mu.Unlock()
	argv, err := b.Command(p)
	if err != nil {
		return nil, err
	}
	files := runFiles(b.cfg.StateDir, p.RunID)
	sh, err := startShim(b.proc, argv, env(p, ""), files)
	if err != nil {
		return nil, err
	}
	r := &run{experimentID: p.ExperimentID, shim: sh, files: files, done: make(chan struct{})}
	// A process that dies at once (bad flags, missing broker) fails the
	// provision instead of the run.
	sut, err := b.awaitStartup(ctx, sh)
	if err != nil {
		if ctx.Err() != nil {
			_ = b.proc.stop(context.Background(), "", p.RunID, sh.pid, b.cfg.StopTimeout, 20*time.Millisecond)
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s exited during start-up: %s", argv[0], exitInfo(files))
	}
	r.targets = []events.Target{{ID: "process/" + p.RunID + "/sut-0", Kind: "process", Node: b.cfg.Node, Role: "sut", PID: sut}}
	wctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	b.mu.Lock()
	b.runs[p.RunID] = r
	b.mu.Unlock()
	go b.watch(wctx, p.RunID, r)
	b.logger.Info("process started", zap.String("run_id", p.RunID), zap.Int("pid", sut), zap.Int("pgid", sh.pid),
		zap.Strings("argv", argv), zap.String("log", files.Log))
	return r.targets, nil
}

// awaitStartup waits the start-up grace and returns the SUT's pid (the
// shim's child; the shim's own when the child cannot be told); an error
// means the shim exited meanwhile.
func (b *Backend) awaitStartup(ctx context.Context, sh started) (int, error) {
	deadline := time.Now().Add(b.cfg.StartupGrace)
	sut := 0
	for {
		if !b.proc.alive(sh.pid, sh.startTicks) {
			return 0, errors.New("exited")
		}
		if sut == 0 {
			if c := b.proc.children(sh.pid); len(c) > 0 {
				sut = c[0].PID
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if sut == 0 {
		sut = sh.pid
	}
	return sut, nil
}

// watch polls the run's shim until it is gone and reports an exit that
// teardown did not cause.
func (b *Backend) watch(ctx context.Context, runID string, r *run) {
	t := time.NewTicker(b.cfg.LivenessPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if b.proc.alive(r.shim.pid, r.shim.startTicks) {
			continue
		}
		close(r.done)
		b.mu.Lock()
		stopping := r.stopping
		b.mu.Unlock()
		if !stopping && b.onExit != nil {
			b.onExit(r.experimentID, runID, exitInfo(r.files))
		}
		return
	}
}

// Teardown stops the run's whole process group. crashed reports a process
// that had already exited on its own, with the reason.
func (b *Backend) Teardown(ctx context.Context, runID string) (crashed bool, reason string, err error) {
	b.mu.Lock()
	r, ok := b.runs[runID]
	if ok {
		r.stopping = true
	}
	b.mu.Unlock()
	if !ok {
		return false, "", nil // never started here, or already removed
	}
	if !b.proc.alive(r.shim.pid, r.shim.startTicks) {
		crashed, reason = true, exitInfo(r.files)
	}
	if err := b.proc.stop(ctx, "", runID, r.shim.pid, b.cfg.StopTimeout, 50*time.Millisecond); err != nil {
		return crashed, reason, err
	}
	r.stopWatch()
	b.mu.Lock()
	delete(b.runs, runID)
	b.mu.Unlock()
	return crashed, reason, nil
}

// Close stops watching; the processes keep running unless StopOnShutdown.
func (b *Backend) Close() {
	b.mu.Lock()
	runs := make(map[string]*run, len(b.runs))
	for id, r := range b.runs {
		runs[id] = r
		r.stopWatch()
	}
	b.mu.Unlock()
	if !b.cfg.StopOnShutdown {
		return
	}
	for id := range runs {
		_, _, _ = b.Teardown(context.Background(), id)
	}
}

// Running lists the runs with live processes.
func (b *Backend) Running() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.runs))
	for id := range b.runs {
		out = append(out, id)
	}
	return out
}
