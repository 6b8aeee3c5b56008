// Package local is the provisioner's local backend: it runs a run's system
// under test as child processes of this machine, each in its own process
// group, and reports their pids as measurement targets.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
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
}

// ExitFunc is told when a run's process exits on its own (a crash).
type ExitFunc func(experimentID, runID, reason string)

// Backend runs processes; safe for concurrent use.
type Backend struct {
	cfg    Config
	logger *zap.Logger
	onExit ExitFunc

	mu   sync.Mutex
	runs map[string]*proc
}

type proc struct {
	cmd      *exec.Cmd
	targets  []events.Target
	logs     *ringBuffer
	done     chan struct{}
	exitErr  error
	stopping bool
}

// New builds the backend; no I/O.
func New(cfg Config, logger *zap.Logger, onExit ExitFunc) *Backend {
	if cfg.StartupGrace == 0 {
		cfg.StartupGrace = 300 * time.Millisecond
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	return &Backend{cfg: cfg, logger: logger.With(zap.String("component", "local-backend")), onExit: onExit, runs: map[string]*proc{}}
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

// Provision starts the run's process; a second call for a running run
// returns the same targets.
func (b *Backend) Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error) {
	b.mu.Lock()
	if pr, ok := b.runs[p.RunID]; ok {
		b.mu.Unlock()
		return pr.targets, nil
	}
	b.mu.Unlock()
	argv, err := b.Command(p)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	logs := newRingBuffer(40)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "GREENFLOW_RUN_ID="+p.RunID)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pr := &proc{cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() {
		pr.exitErr = cmd.Wait()
		close(pr.done)
		b.mu.Lock()
		stopping := pr.stopping
		b.mu.Unlock()
		if !stopping && b.onExit != nil {
			b.onExit(p.ExperimentID, p.RunID, b.exitReason(pr))
		}
	}()
	// A process that dies at once (bad flags, missing broker) fails the
	// provision instead of the run.
	select {
	case <-pr.done:
		return nil, fmt.Errorf("%s exited during start-up: %s", argv[0], b.exitReason(pr))
	case <-time.After(b.cfg.StartupGrace):
	case <-ctx.Done():
		b.kill(pr)
		return nil, ctx.Err()
	}
	pr.targets = []events.Target{{ID: "process/" + p.RunID + "/sut-0", Kind: "process", Node: b.cfg.Node, Role: "sut", PID: cmd.Process.Pid}}
	b.mu.Lock()
	b.runs[p.RunID] = pr
	b.mu.Unlock()
	b.logger.Info("process started", zap.String("run_id", p.RunID), zap.Int("pid", cmd.Process.Pid), zap.Strings("argv", argv))
	return pr.targets, nil
}

func (b *Backend) exitReason(pr *proc) string {
	status := "exited"
	if pr.exitErr != nil {
		status = pr.exitErr.Error()
	} else {
		status = "exit status 0"
	}
	return status + "; last output: " + pr.logs.String()
}

// Teardown stops the run's whole process group. crashed reports a process
// that had already exited on its own, with the reason.
func (b *Backend) Teardown(_ context.Context, runID string) (crashed bool, reason string, err error) {
	b.mu.Lock()
	pr, ok := b.runs[runID]
	if ok {
		pr.stopping = true
	}
	b.mu.Unlock()
	if !ok {
		return false, "", nil // never started here, or already removed
	}
	select {
	case <-pr.done:
		crashed, reason = true, b.exitReason(pr)
	default:
		b.kill(pr)
	}
	b.mu.Lock()
	delete(b.runs, runID)
	b.mu.Unlock()
	return crashed, reason, nil
}

func (b *Backend) kill(pr *proc) {
	pgid := pr.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(b.cfg.StopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-pr.done
	}
}

// Close stops every process (service shutdown).
func (b *Backend) Close() {
	b.mu.Lock()
	runs := make([]string, 0, len(b.runs))
	for id := range b.runs {
		runs = append(runs, id)
	}
	b.mu.Unlock()
	for _, id := range runs {
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
