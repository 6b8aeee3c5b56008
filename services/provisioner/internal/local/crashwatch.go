package local

import (
	"context"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// CrashFunc is told when a run's SUT is found exited on its own.
type CrashFunc func(runID, reason string)

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
