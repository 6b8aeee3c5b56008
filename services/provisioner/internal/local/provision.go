package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

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
	if e.Rec.State == state.Running {
		return b.runningTargets(e.Rec)
	}
	argv, err := b.cfg.Command(p)
	if err != nil {
		return nil, err
	}
	platform := b.store.Platform()
	pr, adopted, err := b.findOrStart(p, argv, platform)
	if err != nil {
		return nil, err
	}
	if err := b.recordProcess(ctx, e.Key, pr); err != nil {
		// Unrecorded, it would run on with nobody to stop it but the
		// leftover sweep: stop it now.
		_ = b.proc.stop(context.WithoutCancel(ctx), platform, p.RunID, pr.PGID, b.cfg.StopTimeout, 20*time.Millisecond)
		return nil, fmt.Errorf("record the process of run %s: %w", p.RunID, err)
	}
	files := filesOf(pr)
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
	if err := b.recordProcess(ctx, e.Key, pr); err != nil {
		return nil, fmt.Errorf("record the process of run %s: %w", p.RunID, err)
	}
	b.logger.Info("process started", zap.String("run_id", p.RunID), zap.Int("pid", sut), zap.Int("pgid", pr.PGID),
		zap.Strings("argv", argv), zap.String("log", pr.Log), zap.Bool("adopted", adopted))
	return []events.Target{{ID: "process/" + p.RunID + "/sut-0", Kind: "process", Node: b.cfg.Node, Role: "sut", PID: sut}}, nil
}

// runningTargets are the targets of a run recorded running: as recorded
// while its process lives (or when it runs on another node, watched
// there), else an error.
func (b *Backend) runningTargets(r state.Record) ([]events.Target, error) {
	if r.Node != b.cfg.Node {
		return r.Targets, nil
	}
	if pr := r.Process; pr != nil && pr.BootID == b.proc.BootID() && b.proc.Alive(pr.ShimPID, pr.ShimStartTicks) {
		return r.Targets, nil
	}
	return nil, fmt.Errorf("run %s: its process has exited", r.RunID)
}

// findOrStart adopts the run's process an earlier provision started
// (adopted true), or starts it under a shim of its own.
func (b *Backend) findOrStart(p events.RunProvision, argv []string, platform string) (*state.Process, bool, error) {
	if pr, ok := b.find(platform, p.RunID); ok {
		b.logger.Info("found the run's process started by an earlier provision; adopting it", zap.String("run_id", p.RunID),
			zap.Int("pgid", pr.PGID))
		pr.Argv = argv
		return pr, true, nil
	}
	files := runFiles(b.cfg.StateDir, p.RunID)
	sh, err := startShim(b.proc, argv, env(p, platform, b.cfg.Node, b.cfg.KafkaSASLFile), files)
	if err != nil {
		return nil, false, err
	}
	return &state.Process{ShimPID: sh.pid, ShimStartTicks: sh.startTicks, PGID: sh.pid, BootID: b.proc.BootID(),
		Log: files.Log, Status: files.Status, Argv: argv}, false, nil
}

// recordProcess writes the run's process into its record.
func (b *Backend) recordProcess(ctx context.Context, key string, pr *state.Process) error {
	_, _, err := b.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		r.Process = pr
		return true, nil
	})
	return err
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
	deadline := b.clock.Now().Add(b.cfg.StartupGrace)
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
		if sut != 0 && !b.clock.Now().Before(deadline) {
			break
		}
		if b.clock.Now().After(deadline.Add(time.Second)) {
			break // no child to tell apart: measure the shim and all below it
		}
		if !poll.Sleep(ctx, b.clock, 20*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	if sut == 0 {
		sut = pr.ShimPID
	}
	return sut, nil
}
