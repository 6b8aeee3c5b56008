package local

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Watch watches a running run's process until Unwatch: when it is found
// exited — at once, for a run adopted after a restart whose process ended
// while no provisioner was watching — crashed is told, once, with the exit
// status and last output. Repeated for a watched run, it only keeps the
// newer record (stopped at shutdown with it, see Close).
func (b *Backend) Watch(e state.Entry, crashed func(reason string)) {
	pr := e.Rec.Process
	if pr == nil {
		return
	}
	runID, watched := e.Rec.RunID, *pr
	if b.watches.Start(runID, e, func(ctx context.Context, _ state.Entry) { b.watch(ctx, runID, watched, crashed) }) {
		b.logger.Info("watching the system under test", zap.String("run_id", runID), zap.Int("pid", pr.PID), zap.Int("pgid", pr.PGID))
	}
}

// Unwatch stops watching a run.
func (b *Backend) Unwatch(runID string) { b.watches.Stop(runID) }

// watch polls /proc for the run's shim until it has exited, which it
// reports, or until ctx ends.
func (b *Backend) watch(ctx context.Context, runID string, pr state.Process, crashed func(reason string)) {
	for first := true; first || poll.Sleep(ctx, b.clock, b.cfg.LivenessPoll); first = false {
		var reason string
		switch {
		case pr.BootID != b.proc.BootID():
			reason = "the machine restarted since the run started (boot " + pr.BootID + "), so its process is gone; last output: " + tail(pr.Log, 5)
		case b.proc.Alive(pr.ShimPID, pr.ShimStartTicks):
			continue
		case pr.StoppedAtShutdown:
			reason = "stopped when its provisioner shut down; last output: " + tail(pr.Log, 5)
		default:
			reason = b.awaitExitInfo(ctx, filesOf(&pr))
		}
		if ctx.Err() != nil {
			return
		}
		if first && !pr.StoppedAtShutdown && pr.BootID == b.proc.BootID() {
			reason = "exited while no provisioner was watching it: " + reason
		}
		b.logger.Warn("system under test exited", zap.String("run_id", runID), zap.String("reason", reason))
		crashed(reason)
		return // watched again if the record stays running
	}
}

// awaitExitInfo reads how the SUT ended; the shim writes its status just
// before it exits, so a missing one is given a moment to appear.
func (b *Backend) awaitExitInfo(ctx context.Context, files Files) string {
	deadline := b.clock.Now().Add(time.Second)
	for {
		if _, ok := exitCode(files); ok || b.clock.Now().After(deadline) || !poll.Sleep(ctx, b.clock, 20*time.Millisecond) {
			return exitInfo(files)
		}
	}
}
