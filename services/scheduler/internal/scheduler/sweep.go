package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
)

// Cancelling an experiment takes two steps, so that it always finishes and
// a large one holds nothing else up. The cancel — the consumer's handler,
// the submission that settles a record cancelled while pending, the
// dead-letter hook — marks the experiment cancelled with Cancelling set, in
// one revision-checked write, and returns. The sweep, a part of its own,
// does the rest: it stops and cancels the unfinished runs a chunk at a time
// (started ones first: they hold a slot and a deployed system under test),
// and once none is left it stores the final rows and the state, announces
// the cancellation and clears Cancelling.
//
// Why: the cancel's handler used to walk every run itself — about 2.5
// minutes for 100,000 runs, during which every other experiment's events
// waited in the consumer behind it and their phases timed out — and a final
// experiment is not ticked, so a walk cut short (the process killed, the
// cancel's deliveries spent, the dead-letter hook killed in turn) left runs
// pending or running, holding their slot and their deployment, until a user
// cancelled again (63,772 of 100,000 in a trial).
//
// The sweep looks only at the final experiments the view marks (view.ended):
// one whose record arrives final, or one of whose runs arrives unfinished.
// So it also finishes a cancellation that a scheduler without the sweep left
// half done (no Cancelling: the sweep sets it first, so that a crash in
// between still ends announced), and a finished experiment costs it one look
// at its runs in the view, not one per tick.

// sweepChunk is how many runs the sweep cancels in one experiment before it
// turns to the next; each is one revision-checked write under runMu, which
// the consumer's handlers and the tick take between two of them.
const sweepChunk = 256

// sweepLoop sweeps every Config.Tick, and at once when woken (a cancel),
// until nothing is left to do or ctx ends.
func (s *Scheduler) sweepLoop(ctx context.Context) error {
	service.Every(ctx, s.clock, s.cfg.Tick, s.sweepWake, func() {
		for ctx.Err() == nil {
			more, err := s.sweep(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.Warn("cancellation sweep failed; retrying at the next tick", zap.Error(err))
				}
				return
			}
			if !more {
				return
			}
		}
	})
	return nil
}

// wakeSweep has the sweep look at once rather than at its next tick.
func (s *Scheduler) wakeSweep() {
	select {
	case s.sweepWake <- struct{}{}:
	default:
	}
}

// sweep takes one chunk of each marked experiment; more: one has runs left.
func (s *Scheduler) sweep(ctx context.Context) (more bool, err error) {
	marks := s.view.endedMarks()
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(marks)) {
		m, err := s.sweepExperiment(ctx, id, marks[id])
		if err != nil {
			errs = append(errs, fmt.Errorf("finish experiment %s: %w", id, err))
		}
		more = more || m
	}
	return more, errors.Join(errs...)
}

// sweepExperiment cancels up to sweepChunk unfinished runs of a final
// experiment, or, when it has none (left), finishes its cancellation and
// drops its mark. more: runs were cancelled, so it is looked at again.
func (s *Scheduler) sweepExperiment(ctx context.Context, id string, mark uint64) (more bool, err error) {
	e, ok := s.view.experiment(id)
	if !ok || e.Pending || !events.ExperimentFinal(e.State) {
		// Gone, or cancelled before its spec was expanded: the submission
		// settles it, which marks it again.
		s.view.swept(id, mark)
		return false, nil
	}
	open := s.view.unfinished(e)
	if len(open) > 0 && e.State == events.ExperimentStateCancelled && !e.Cancelling {
		// Cancelled by a scheduler that walked the runs itself and stopped
		// half way: marked first, so that once its runs are cancelled it is
		// announced, whatever happens in between.
		ve, _, err := update(ctx, s.kv, expKey(id), func(x *ExperimentRecord) (bool, error) {
			if x.State != events.ExperimentStateCancelled || x.Cancelling {
				return false, nil
			}
			x.Cancelling = true
			return true, nil
		})
		if err != nil {
			return false, err
		}
		s.view.putExperiment(ve)
		e = ve.Value
		s.logger.Info("finishing a cancellation left half done", zap.String("experiment_id", id), zap.Int("runs_unfinished", len(open)))
	}
	reason := "cancelled: " + e.Reason
	if e.State != events.ExperimentStateCancelled && len(open) > 0 {
		// Not expected: a done or failed experiment's runs are all final
		// when it ends. Such a run would never move again (the tick passes
		// over final experiments), holding its slot if started.
		reason = "cancelled: its experiment had already ended " + e.State
		s.logger.Warn("unfinished runs under an ended experiment; cancelling them", zap.String("experiment_id", id),
			zap.String("state", e.State), zap.Int("runs", len(open)))
	}
	cancelled := 0
	for _, rid := range open {
		if cancelled == sweepChunk {
			return true, nil
		}
		found, err := s.cancelRun(ctx, rid, reason)
		if err != nil {
			return false, err
		}
		if found {
			cancelled++
		}
	}
	if cancelled > 0 {
		return true, nil // the next look finds none left, or runs added meanwhile
	}
	if len(open) > 0 {
		s.logger.Warn("runs listed by an ended experiment are missing from the state bucket", zap.String("experiment_id", id),
			zap.Strings("run_ids", open))
	}
	if e.Cancelling {
		if err := s.finishCancellation(ctx, e); err != nil {
			return false, err
		}
	}
	s.view.swept(id, mark)
	return false, nil
}

// cancelRun stops a started run and cancels an unfinished one; found is
// false when its key does not exist. A run found final already (another
// scheduler's write the view had not seen yet) is put in the view.
func (s *Scheduler) cancelRun(ctx context.Context, runID, reason string) (found bool, err error) {
	vr, changed, err := s.updateRun(ctx, runID, func(r *RunRecord) (bool, error) {
		if events.RunFinal(r.State) {
			return false, nil
		}
		r.Reason = reason
		if r.State != events.RunStatePending {
			s.stopRun(ctx, r)
		}
		return true, s.transition(ctx, r, events.RunStateCancelled)
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cancel run %s: %w", runID, err)
	}
	if !changed {
		s.view.putRun(vr)
	}
	return true, nil
}

// finishCancellation stores a cancelled experiment's final rows and state,
// announces it and clears Cancelling, in that order: readers told that it
// was cancelled find every run stored. A failure leaves Cancelling set, and
// the next sweep does it again; a crash before the flag is cleared
// announces it again under the same message id, which the stream drops.
func (s *Scheduler) finishCancellation(ctx context.Context, e ExperimentRecord) error {
	if err := s.storeFinalRows(ctx, e); err != nil {
		return err
	}
	if err := s.store.SetExperimentState(ctx, e.ID, events.ExperimentStateCancelled); err != nil {
		return fmt.Errorf("store experiment %s's state: %w", e.ID, err)
	}
	t := s.view.counts(e, s.cfg.Retries)
	if err := s.publishExperiment(ctx, e, t); err != nil {
		return err
	}
	ve, _, err := update(ctx, s.kv, expKey(e.ID), func(x *ExperimentRecord) (bool, error) {
		if !x.Cancelling {
			return false, nil
		}
		x.Cancelling = false
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("record experiment %s's cancellation finished: %w", e.ID, err)
	}
	s.view.putExperiment(ve)
	s.logger.Info("experiment cancelled", zap.String("experiment_id", e.ID), zap.Int("runs_cancelled", t.cancelled),
		zap.Int("runs_done", t.done), zap.Int("runs_failed", t.failed), zap.String("reason", e.Reason))
	return nil
}
