package scheduler

import (
	"context"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
)

// tickLoop runs tick every Config.Tick until ctx ends.
func (s *Scheduler) tickLoop(ctx context.Context) error {
	service.Every(ctx, s.clock, s.cfg.Tick, nil, func() {
		if err := s.tick(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("scheduler tick failed", zap.Error(err))
		}
	})
	return nil
}

// tick fires due cron triggers, advances timed phases, creates retries a
// crash left undone, steps capacity searches, finishes experiments and
// starts pending runs within the limit. It reads the local view; every
// change goes through a revision-checked update.
func (s *Scheduler) tick(ctx context.Context) error {
	s.fireCron(ctx, s.clock.Now())
	now := s.nowMs()
	running := 0
	var pending []string
	for _, e := range s.view.active() {
		if e.Pending {
			continue // not expanded into runs yet
		}
		finished := true
		for _, rid := range e.RunIDs {
			r, ok := s.view.run(rid)
			switch {
			case ok && r.retryDue(s.cfg.Retries):
				// Normally created by the commit that failed the run; this
				// covers a crash in between.
				s.runMu.Lock()
				err := s.retry(ctx, r)
				s.runMu.Unlock()
				if err != nil {
					s.logger.Warn("schedule retry failed", zap.String("run_id", rid), zap.Error(err))
				}
			case !ok || events.RunFinal(r.State):
				continue
			case r.State == events.RunStatePending:
				pending = append(pending, rid)
			default:
				running++
				if err := s.advance(ctx, rid, now); err != nil {
					s.logger.Warn("advance run failed", zap.String("run_id", rid), zap.Error(err))
				}
			}
			finished = false
		}
		if s.searchDue(e) {
			if err := s.advanceSearch(ctx, e.ID); err != nil {
				s.logger.Warn("capacity search step failed", zap.String("experiment_id", e.ID), zap.Error(err))
			}
			continue
		}
		if finished {
			if err := s.refreshExperiment(ctx, e.ID); err != nil {
				return err
			}
		}
	}
	s.runsActive.Set(float64(running))
	return s.startPending(ctx, pending)
}

// startPending starts pending runs, in order, as their cluster has a free
// slot; a retry waits until its back-off is over (retries.go), without
// holding up the runs behind it. The slot set in KV, not this scheduler's count, is the limit:
// other schedulers start runs too.
func (s *Scheduler) startPending(ctx context.Context, pending []string) error {
	full := map[string]bool{}
	for _, rid := range pending {
		pr, ok := s.view.run(rid)
		if !ok {
			continue
		}
		if pr.NotBeforeMs > s.nowMs() {
			continue // a retry waiting out its back-off
		}
		cluster := clusterOf(pr)
		if full[cluster] || s.slotsFull(cluster) {
			full[cluster] = true
			continue
		}
		if !s.experimentLive(pr.ExperimentID) {
			continue // cancelled meanwhile
		}
		took, err := s.takeSlot(ctx, cluster, rid)
		if err != nil {
			return err
		}
		if !took {
			full[cluster] = true
			continue
		}
		r, changed, err := s.updateRun(ctx, rid, func(r *RunRecord) (bool, error) {
			if r.State != events.RunStatePending || !s.experimentLive(r.ExperimentID) || r.NotBeforeMs > s.nowMs() {
				return false, nil // started by another scheduler, or cancelled meanwhile
			}
			return true, s.transition(ctx, r, events.RunStateProvisioning)
		})
		if err != nil {
			return err
		}
		if changed {
			_ = s.refreshExperiment(ctx, r.Value.ExperimentID)
		}
		// Not changed: another scheduler started it (it holds the slot
		// now), or it was cancelled (its final state frees the slot).
	}
	return nil
}

// experimentLive reports whether the view shows the experiment unfinished.
func (s *Scheduler) experimentLive(id string) bool {
	e, ok := s.view.experiment(id)
	return ok && !events.ExperimentFinal(e.State)
}
