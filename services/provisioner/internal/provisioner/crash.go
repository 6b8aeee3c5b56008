package provisioner

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// crashed is told by a backend's watch that the running run of record e
// has a SUT that exited on its own (or, on a cluster, restarted). The run is reported crashed at once —
// the scheduler fails it — and its teardown is recorded for the reconciler,
// which reports again once nothing is left. Several instances may notice
// the same crash: the revision-checked write lets one of them report it.
func (p *Provisioner) crashed(e state.Entry, reason string) {
	backend, runID := e.Rec.Backend, e.Rec.RunID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, changed, err := p.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
		if r.State != state.Running || r.Teardown != nil {
			return false, nil
		}
		if pr := r.Process; pr != nil && pr.Signalled && !pr.StoppedAtShutdown {
			return false, nil // stopped on purpose
		}
		r.State = state.Stopping
		r.Teardown = &state.Teardown{RequestedMs: p.clock.Now().UnixMilli(), Cause: "crash", Report: true, Crashed: true, CrashReason: reason,
			From: state.Running}
		return true, nil
	})
	if err != nil {
		p.logger.Error("record a crash failed; it is noticed again", zap.String("run_id", runID), zap.Error(err))
		return
	}
	if !changed {
		return
	}
	p.poke()
	p.provisioned.WithLabelValues(backend, "crash", "reported").Inc()
	p.logger.Error("system under test crashed during the run", zap.String("run_id", runID), zap.String("experiment_id", e.Rec.ExperimentID),
		zap.String("reason", reason))
	if err := p.bus.Publish(ctx, events.RunTornDown{ExperimentID: e.Rec.ExperimentID, RunID: runID, Crashed: true, Incomplete: true,
		Reason: reason, TsMs: p.clock.Now().UnixMilli()}, "crashed:"+runID); err != nil {
		p.logger.Error("publish crash failed", zap.String("run_id", runID), zap.Error(err))
	}
}
