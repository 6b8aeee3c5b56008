package scheduler

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/spec"
)

// An experiment exists from the moment the API hands out its id: the API
// publishes the experiment.submit command, then writes the experiment's
// record (pending, state submitted), then answers 202. Expanding a spec
// into runs is the expander's work and can wait behind other expansions (a
// 20,000-run sweep takes seconds to create), so the record is what lets
// status answer and a cancel be recorded in between. The expander then
// settles the record: it replaces the pending one with the accepted (or
// failed) experiment, keeping a cancellation that came first.
//
// Rejected: answering status from the view only (the view of another
// scheduler, or of this one behind a burst of writes, lags the bucket) and
// publishing the cancel only (it queues behind the same busy consumer, and
// a cancel of an id the consumer does not know yet was dropped).

// The consumer does not expand a spec itself: it writes the spec on the
// pending record and acks (experiments.go submit), and the expander, a
// part of its own, expands each queued record, oldest first, and settles
// it. A crash in between leaves the pending record with its spec, which
// the next scheduler's expander takes up; two schedulers expanding one
// record create the same keys and only one settles it.

// expandLoop expands queued experiments every Config.Tick, and at once
// when woken, until ctx ends; a failed expansion is tried again at the next
// tick.
func (s *Scheduler) expandLoop(ctx context.Context) error {
	service.Every(ctx, s.clock, s.cfg.Tick, s.expandWake, func() {
		for _, id := range s.view.queued() {
			var rec ExperimentRecord
			_, err := s.kv.get(ctx, expKey(id), &rec)
			if err == nil && rec.Pending && rec.Spec != "" {
				err = s.expand(ctx, rec)
			}
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
				s.logger.Warn("expand experiment failed; retrying at the next tick", zap.String("experiment_id", id), zap.Error(err))
			}
		}
	})
	return nil
}

// wakeExpander has the expander look at once rather than at its next tick.
func (s *Scheduler) wakeExpander() {
	select {
	case s.expandWake <- struct{}{}:
	default:
	}
}

// errUnknownExperiment is the error for an id no experiment has.
var errUnknownExperiment = errors.New("unknown experiment")

// errAlreadyEnded is the error for a cancel of an experiment that ended
// done or failed.
var errAlreadyEnded = errors.New("nothing to cancel")

// recordSubmission writes the pending record of an experiment whose
// submission the API has just queued. It comes after the command, so a
// crash in between strands nothing (the consumer creates the experiment
// from the command alone); a consumer that got there first has created the
// key, which is kept.
func (s *Scheduler) recordSubmission(ctx context.Context, id string, e *spec.Experiment, runs int, by string) error {
	if s.kv.kv == nil {
		return ErrNotReady
	}
	rec := ExperimentRecord{ID: id, Name: e.Metadata.Name, State: events.ExperimentStateSubmitted, RunIDs: []string{}, CreatedMs: s.nowMs(),
		Pending: true, RunsPlanned: runs, Labels: e.Metadata.Labels, SubmittedBy: by}
	rev, err := s.kv.create(ctx, expKey(id), rec)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record submission %s: %w", id, err)
	}
	s.view.putExperiment(versioned[ExperimentRecord]{rec, rev})
	return nil
}

// lookup returns an experiment from the view, or from the bucket when the
// view does not have it yet (the view lags the bucket's writes, and those
// of other schedulers more).
func (s *Scheduler) lookup(ctx context.Context, id string) (ExperimentRecord, bool, error) {
	if !possibleID(id) {
		// No experiment has it (ids are a name, a time and a suffix of
		// letters, digits and '-'), and as a KV key it would be refused
		// ("nats: invalid key") rather than found missing.
		return ExperimentRecord{}, false, nil
	}
	if e, ok := s.view.experiment(id); ok {
		return e, true, nil
	}
	if s.kv.kv == nil || !s.view.isSynced() {
		// Before the view is loaded its counts of the runs would be wrong:
		// the caller answers not ready.
		return ExperimentRecord{}, false, ErrNotReady
	}
	var e ExperimentRecord
	rev, err := s.kv.get(ctx, expKey(id), &e)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ExperimentRecord{}, false, nil
	}
	if err != nil {
		return ExperimentRecord{}, false, fmt.Errorf("read experiment %s: %w", id, err)
	}
	s.view.putExperiment(versioned[ExperimentRecord]{e, rev})
	return e, true, nil
}

// cancelPending records a cancellation on a pending experiment's record;
// false when the experiment is not pending (any more), and the cancel has
// to go to its runs through the consumer.
func (s *Scheduler) cancelPending(ctx context.Context, id, reason string) (bool, error) {
	ve, _, err := update(ctx, s.kv, expKey(id), func(e *ExperimentRecord) (bool, error) {
		if !e.Pending || events.ExperimentFinal(e.State) {
			return false, nil
		}
		e.State, e.Reason = events.ExperimentStateCancelled, reason
		return true, nil
	})
	if err != nil {
		return false, err
	}
	if !ve.Value.Pending {
		return false, nil
	}
	s.view.putExperiment(ve)
	return true, nil
}

// settleSubmission stores the experiment a submission became: it creates
// the key, or replaces a pending record — keeping the submission time and
// a cancellation recorded on it (a queued experiment becomes cancelled).
// false: the experiment was settled already (a redelivery, another
// scheduler); the stored record is returned.
func (s *Scheduler) settleSubmission(ctx context.Context, rec ExperimentRecord) (versioned[ExperimentRecord], bool, error) {
	return upsert(ctx, s.kv, expKey(rec.ID), func(cur *ExperimentRecord, found bool) (bool, error) {
		switch {
		case !found:
			*cur = rec
		case !cur.Pending:
			return false, nil
		default:
			next := rec
			next.Pending = false
			if cur.CreatedMs != 0 {
				next.CreatedMs = cur.CreatedMs
			}
			if cur.State == events.ExperimentStateCancelled && next.State != events.ExperimentStateFailed {
				// The sweep cancels the runs created and announces it.
				next.State, next.Reason, next.Cancelling = events.ExperimentStateCancelled, cur.Reason, true
			}
			*cur = next
		}
		return true, nil
	})
}

// possibleID reports whether id could name an experiment: 1 to 255
// letters, digits, '-' and '_', starting with a letter or digit.
func possibleID(id string) bool {
	if id == "" || len(id) > 255 || id[0] == '-' || id[0] == '_' {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
