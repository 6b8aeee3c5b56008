// Package local is the provisioner's local backend: it runs a run's system
// under test as processes of this machine and reports their pids as
// measurement targets. Each SUT runs under a small shell shim in a session
// and process group of its own, with no parent-death signal, its output in
// a log file and its exit status written to a file by the shim: the SUT
// outlives a provisioner that dies. Everything needed to find it again —
// pid and start time, process group, files — is in the run's record
// (package state), written before and right after the start, and every
// process carries the run's markers in its environment; so a restarted
// provisioner, or another one on the same node, adopts it, watches it, and
// can stop it.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
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
	// Node names this machine in targets and records.
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
	// ProcRoot is the process table (default /proc).
	ProcRoot string `yaml:"procRoot"`
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

// CrashFunc is told when a run's SUT is found exited on its own.
type CrashFunc func(runID, reason string)

// Backend runs processes; safe for concurrent use.
type Backend struct {
	cfg     Config
	store   *state.Store
	logger  *zap.Logger
	proc    procs
	onCrash CrashFunc

	mu       sync.Mutex
	watching map[string]*watch
	watchers sync.WaitGroup
	closed   bool
}

type watch struct {
	cancel context.CancelFunc
	entry  state.Entry
}

// New builds the backend; no I/O.
func New(cfg Config, store *state.Store, logger *zap.Logger) *Backend {
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
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	return &Backend{cfg: cfg, store: store, logger: logger.With(zap.String("component", "local-backend")),
		proc: procs{FS: procfs.FS{Root: cfg.ProcRoot}, node: cfg.Node}, watching: map[string]*watch{}}
}

// OnCrash sets the crash handler; call it before the first Watch.
func (b *Backend) OnCrash(fn CrashFunc) { b.onCrash = fn }

// Node is the machine this backend runs processes on.
func (b *Backend) Node() string { return b.cfg.Node }

// Key is the record of run runID.
func (b *Backend) Key(runID string) string { return state.LocalKey(runID) }

// Owns reports whether this backend can stop the run of rec: it runs on
// this node.
func (b *Backend) Owns(rec state.Record) bool {
	return rec.Backend == "local" && rec.Node == b.cfg.Node
}

// TeardownBound is the longest one removal may take.
func (b *Backend) TeardownBound() time.Duration { return b.cfg.StopTimeout + 10*time.Second }

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
func env(p events.RunProvision, platform, node string) []string {
	k, _ := json.Marshal(p.Kafka)
	return append(os.Environ(), EnvRunID+"="+p.RunID, EnvExperimentID+"="+p.ExperimentID, EnvPlatform+"="+platform, EnvNode+"="+node,
		EnvKafka+"="+string(k))
}

// Provision starts the run, whose record (state starting, held by the
// caller) must exist, and returns its targets. The shim's pid and start
// time are recorded right after the start; a provision repeated after a
// crash of its provisioner finds the process by its markers and adopts it
// instead of starting a second one. For a running record it returns the
// recorded targets while the process lives.
func (b *Backend) Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error) {
	e, err := b.store.Get(ctx, b.Key(p.RunID))
	if err != nil {
		return nil, fmt.Errorf("run %s: read its record: %w", p.RunID, err)
	}
	if e.Rec.State == state.Running && e.Rec.Node != b.cfg.Node {
		return e.Rec.Targets, nil // running on its node, watched there
	}
	if e.Rec.State == state.Running {
		if pr := e.Rec.Process; pr != nil && pr.BootID == b.proc.BootID() && b.proc.Alive(pr.ShimPID, pr.ShimStartTicks) {
			return e.Rec.Targets, nil
		}
		return nil, fmt.Errorf("run %s: its process has exited", p.RunID)
	}
	argv, err := b.Command(p)
	if err != nil {
		return nil, err
	}
	platform := b.store.Platform()
	pr, adopted := b.find(platform, p.RunID)
	if adopted {
		b.logger.Info("found the run's process started by an earlier provision; adopting it", zap.String("run_id", p.RunID),
			zap.Int("pgid", pr.PGID))
		pr.Argv = argv
	} else {
		files := runFiles(b.cfg.StateDir, p.RunID)
		sh, err := startShim(b.proc, argv, env(p, platform, b.cfg.Node), files)
		if err != nil {
			return nil, err
		}
		pr = &state.Process{ShimPID: sh.pid, ShimStartTicks: sh.startTicks, PGID: sh.pid, BootID: b.proc.BootID(),
			Log: files.Log, Status: files.Status, Argv: argv}
	}
	if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
		r.Process = pr
		return true, nil
	}); err != nil {
		// Unrecorded, it would run on with nobody to stop it but the
		// leftover sweep: stop it now.
		_ = b.proc.stop(context.WithoutCancel(ctx), platform, p.RunID, pr.PGID, b.cfg.StopTimeout, 20*time.Millisecond)
		return nil, fmt.Errorf("record the process of run %s: %w", p.RunID, err)
	}
	files := Files{Dir: filepath.Dir(pr.Status), Log: pr.Log, Status: pr.Status}
	// A process that dies at once (bad flags, missing broker) fails the
	// provision instead of the run.
	sut, err := b.awaitStartup(ctx, pr, adopted)
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down mid-way: the redelivered provision adopts it,
			// unless this provisioner stops its SUTs when it stops.
			if b.cfg.StopOnShutdown {
				b.stopAtShutdown(context.WithoutCancel(ctx), e, pr)
			}
			return nil, fmt.Errorf("provision of run %s interrupted: %w", p.RunID, ctx.Err())
		}
		return nil, fmt.Errorf("%s exited during start-up: %s", argv[0], exitInfo(files))
	}
	if st, err := b.proc.Stat(sut); err == nil {
		pr.PID, pr.StartTicks = sut, st.StartTicks
	}
	if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
		r.Process = pr
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("record the process of run %s: %w", p.RunID, err)
	}
	b.logger.Info("process started", zap.String("run_id", p.RunID), zap.Int("pid", sut), zap.Int("pgid", pr.PGID),
		zap.Strings("argv", argv), zap.String("log", pr.Log), zap.Bool("adopted", adopted))
	return []events.Target{{ID: "process/" + p.RunID + "/sut-0", Kind: "process", Node: b.cfg.Node, Role: "sut", PID: sut}}, nil
}

// find looks for a run's shim by its markers: the marked session leader.
// Its files are read from its command line (the status file is its first
// argument), so they are found even when another state directory was used.
func (b *Backend) find(platform, runID string) (*state.Process, bool) {
	for _, m := range b.proc.scan(platform, runID)[runID] {
		s := m.stat
		if s.PID != s.Session || s.PID != s.PGRP {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(b.cfg.ProcRoot, strconv.Itoa(s.PID), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		// /bin/sh -c <script> <name> <status file> argv...
		if len(args) < 5 || args[3] != shimName {
			continue
		}
		status := args[4]
		return &state.Process{ShimPID: s.PID, ShimStartTicks: s.StartTicks, PGID: s.PGRP, BootID: b.proc.BootID(),
			Log: filepath.Join(filepath.Dir(status), "sut.log"), Status: status}, true
	}
	return nil, false
}

// awaitStartup waits the start-up grace and returns the SUT's pid — the
// shim's child, or the shim's own when the child cannot be told; an error
// means the shim exited meanwhile. For an adopted process the grace counts
// from its start (known to a second: boot time has that resolution).
func (b *Backend) awaitStartup(ctx context.Context, pr *state.Process, adopted bool) (int, error) {
	deadline := time.Now().Add(b.cfg.StartupGrace)
	if at := b.proc.StartedAt(pr.ShimStartTicks); adopted && !at.IsZero() {
		if d := at.Add(b.cfg.StartupGrace + time.Second); d.Before(deadline) {
			deadline = d
		}
	}
	sut := 0
	for {
		if !b.proc.Alive(pr.ShimPID, pr.ShimStartTicks) {
			return 0, errors.New("exited")
		}
		if sut == 0 {
			if c := b.proc.children(pr.ShimPID); len(c) > 0 {
				sut = c[0].PID
			}
		}
		if sut != 0 && !time.Now().Before(deadline) {
			break
		}
		if time.Now().After(deadline.Add(time.Second)) {
			break // no child to tell apart: measure the shim and all below it
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if sut == 0 {
		sut = pr.ShimPID
	}
	return sut, nil
}

// Watch watches a running run's process until Unwatch: when it is found
// exited — at once, for a run adopted after a restart whose process ended
// while no provisioner was watching — the crash handler is told, with the
// exit status and last output.
func (b *Backend) Watch(e state.Entry) {
	pr := e.Rec.Process
	if pr == nil || b.onCrash == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w, ok := b.watching[e.Rec.RunID]; ok || b.closed {
		if ok {
			w.entry = e
		}
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.watching[e.Rec.RunID] = &watch{cancel: cancel, entry: e}
	b.logger.Info("watching the system under test", zap.String("run_id", e.Rec.RunID), zap.Int("pid", pr.PID), zap.Int("pgid", pr.PGID))
	b.watchers.Add(1)
	go func() {
		defer b.watchers.Done()
		b.watch(ctx, e.Rec.RunID, *pr)
	}()
}

// Unwatch stops watching a run.
func (b *Backend) Unwatch(runID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w, ok := b.watching[runID]; ok {
		w.cancel()
		delete(b.watching, runID)
	}
}

// Watching lists the runs being watched.
func (b *Backend) Watching() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.watching))
	for id := range b.watching {
		out = append(out, id)
	}
	return out
}

func (b *Backend) watch(ctx context.Context, runID string, pr state.Process) {
	files := Files{Dir: filepath.Dir(pr.Status), Log: pr.Log, Status: pr.Status}
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.cfg.LivenessPoll):
			}
		}
		var reason string
		switch {
		case pr.BootID != b.proc.BootID():
			reason = "the machine restarted since the run started (boot " + pr.BootID + "), so its process is gone; last output: " + tail(pr.Log, 5)
		case b.proc.Alive(pr.ShimPID, pr.ShimStartTicks):
			continue
		case pr.StoppedAtShutdown:
			reason = "stopped when its provisioner shut down; last output: " + tail(pr.Log, 5)
		default:
			reason = b.awaitExitInfo(ctx, files)
		}
		if ctx.Err() != nil {
			return
		}
		if first && !pr.StoppedAtShutdown && pr.BootID == b.proc.BootID() {
			reason = "exited while no provisioner was watching it: " + reason
		}
		b.logger.Warn("system under test exited", zap.String("run_id", runID), zap.String("reason", reason))
		b.onCrash(runID, reason)
		b.mu.Lock()
		delete(b.watching, runID) // watched again if the record stays running
		b.mu.Unlock()
		return
	}
}

// awaitExitInfo reads how the SUT ended; the shim writes its status just
// before it exits, so a missing one is given a moment to appear.
func (b *Backend) awaitExitInfo(ctx context.Context, files Files) string {
	deadline := time.Now().Add(time.Second)
	for {
		if _, ok := exitCode(files); ok || time.Now().After(deadline) {
			return exitInfo(files)
		}
		select {
		case <-ctx.Done():
			return exitInfo(files)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Remove stops every process of the run: its process group (when the
// record names one, on this boot) and every process carrying its markers.
// crashed reports a running SUT found already exited on its own, with its
// exit status and last output. e is nil for a run with no record.
func (b *Backend) Remove(ctx context.Context, runID string, e *state.Entry) (crashed bool, reason string, err error) {
	platform := b.store.Platform()
	pgid := 0
	if e != nil && e.Rec.Process != nil {
		pr := e.Rec.Process
		sameBoot := pr.BootID == b.proc.BootID()
		alive := sameBoot && b.proc.Alive(pr.ShimPID, pr.ShimStartTicks)
		if sameBoot {
			pgid = pr.PGID
		}
		switch {
		case !alive && (!pr.Signalled || pr.StoppedAtShutdown):
			crashed = true
			reason = exitInfo(Files{Dir: filepath.Dir(pr.Status), Log: pr.Log, Status: pr.Status})
			if pr.StoppedAtShutdown {
				reason = "stopped when its provisioner shut down; " + reason
			}
			if !sameBoot {
				reason = "the machine restarted since the run started; last output: " + tail(pr.Log, 5)
			}
		case alive && !pr.Signalled:
			// Say it first, so whoever sees it end knows it was stopped.
			if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
				if r.Process == nil {
					return false, nil
				}
				r.Process.Signalled = true
				return true, nil
			}); err != nil {
				return false, "", fmt.Errorf("record that run %s is being stopped: %w", runID, err)
			}
		}
	}
	b.Unwatch(runID)
	if err := b.proc.stop(ctx, platform, runID, pgid, b.cfg.StopTimeout, 50*time.Millisecond); err != nil {
		return crashed, reason, err
	}
	return crashed, reason, nil
}

// Leftovers lists the runs whose marked processes run on this node.
func (b *Backend) Leftovers(context.Context) ([]state.Leftover, error) {
	platform := b.store.Platform()
	var out []state.Leftover
	for runID, procs := range b.proc.scan(platform, "") {
		l := state.Leftover{RunID: runID, Platform: platform, Kind: "process"}
		var pids []string
		var oldest uint64
		for _, m := range procs {
			pids = append(pids, strconv.Itoa(m.stat.PID))
			if oldest == 0 || m.stat.StartTicks < oldest {
				oldest = m.stat.StartTicks
			}
			l.ExperimentID = m.env[EnvExperimentID]
			if l.Kafka == nil && m.env[EnvKafka] != "" {
				var k events.Kafka
				if json.Unmarshal([]byte(m.env[EnvKafka]), &k) == nil {
					l.Kafka = &k
				}
			}
		}
		l.Since = b.proc.StartedAt(oldest)
		l.What = "processes " + strings.Join(pids, ", ") + " on " + b.cfg.Node
		out = append(out, l)
	}
	return out, nil
}

// Forget removes a torn-down run's files.
func (b *Backend) Forget(rec state.Record) {
	if rec.Process == nil || rec.Node != b.cfg.Node || rec.Process.Status == "" {
		return
	}
	dir := filepath.Dir(rec.Process.Status)
	if filepath.Base(filepath.Dir(dir)) != "runs" {
		return // not a run directory of ours
	}
	if err := os.RemoveAll(dir); err != nil {
		b.logger.Warn("remove run files failed", zap.String("run_id", rec.RunID), zap.String("dir", dir), zap.Error(err))
	}
}

// Close stops watching. The processes keep running for the next
// provisioner to adopt, unless StopOnShutdown: then they are stopped, and
// their records say so (the run cannot go on).
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	runs := make([]state.Entry, 0, len(b.watching))
	for id, w := range b.watching {
		w.cancel()
		runs = append(runs, w.entry)
		delete(b.watching, id)
	}
	b.mu.Unlock()
	b.watchers.Wait()
	if !b.cfg.StopOnShutdown {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.TeardownBound())
	defer cancel()
	for _, e := range runs {
		b.stopAtShutdown(ctx, e, e.Rec.Process)
	}
}

// stopAtShutdown stops a run's processes as its provisioner stops, and
// records so: the run cannot go on, and whoever adopts its record reports
// it.
func (b *Backend) stopAtShutdown(ctx context.Context, e state.Entry, pr *state.Process) {
	if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
		if r.Process == nil {
			return false, nil
		}
		r.Process.Signalled, r.Process.StoppedAtShutdown = true, true
		return true, nil
	}); err != nil {
		b.logger.Warn("record the stop of a run's process failed", zap.String("run_id", e.Rec.RunID), zap.Error(err))
	}
	pgid := 0
	if pr != nil {
		pgid = pr.PGID
	}
	if err := b.proc.stop(ctx, b.store.Platform(), e.Rec.RunID, pgid, b.cfg.StopTimeout, 50*time.Millisecond); err != nil {
		b.logger.Warn("stop a run's process at shutdown failed", zap.String("run_id", e.Rec.RunID), zap.Error(err))
	}
}
