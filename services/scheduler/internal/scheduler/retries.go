package scheduler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// A run that failed for a transient reason (a timeout, a load generator
// failure, a crash of the system under test, an invalid measurement) is run
// again, up to Config.Retries times, as a new run "<first run>-aN" with the
// same config. The retry is normally created by the commit that failed the
// run; the tick creates any whose creation a crash interrupted.
//
// A retry does not start at once: a transient failure is usually an outage
// (the broker, the cluster's API server) that needs time to pass, and an
// immediate retry fails on the same outage. Attempt n waits
// Config.RetryBackoff·2^(n-1), at most Config.RetryBackoffMax, after the
// failure; the wait is on the retry's record (NotBeforeMs) so a restarted
// scheduler keeps it, and the tick starts the run only once it is over.

// retryDelay is how long attempt n (1 for the first retry) waits.
func (c Config) retryDelay(attempt int) time.Duration {
	d := c.RetryBackoff
	for i := 1; i < attempt && d < c.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.RetryBackoffMax)
}

// retryDue reports a failed run that will be retried but is not yet.
func (r *RunRecord) retryDue(retries int) bool {
	return r.State == events.RunStateFailed && r.Transient && r.Attempt < retries && r.RetriedAs == ""
}

// retry queues a new attempt of a failed run (runMu held): a run of its own (so every
// message id differs from the failed attempt's) with the same config, added
// to the experiment. Creating it twice is harmless.
func (s *Scheduler) retry(ctx context.Context, failed RunRecord) error {
	first := failed.RetryOf
	if first == "" {
		first = failed.RunID
	}
	now := s.nowMs()
	delay := s.cfg.retryDelay(failed.Attempt + 1)
	rr := RunRecord{NotBeforeMs: now + delay.Milliseconds(), ExperimentID: failed.ExperimentID, RunID: fmt.Sprintf("%s-a%d", first, failed.Attempt+1), Repetition: failed.Repetition,
		Factors: failed.Factors, Config: failed.Config, ConfigHash: failed.ConfigHash, State: events.RunStatePending, EnteredMs: now, CreatedMs: now,
		Attempt: failed.Attempt + 1, RetryOf: first}
	var created *versioned[RunRecord]
	ve, _, err := update(ctx, s.kv, expKey(failed.ExperimentID), func(e *ExperimentRecord) (bool, error) {
		if slices.Contains(e.RunIDs, rr.RunID) {
			return false, nil
		}
		rr.Index = len(e.RunIDs)
		// A key an earlier attempt of this update created (before a
		// conflicting write moved the index on) is set to this attempt's.
		vr, err := s.createPendingRun(ctx, rr)
		if err != nil {
			return false, fmt.Errorf("store retry %s: %w", rr.RunID, err)
		}
		created = &vr
		e.RunIDs = append(e.RunIDs, rr.RunID)
		return true, nil
	})
	if err != nil {
		return err
	}
	if created != nil { // stored only once the experiment lists it
		s.view.putRun(*created)
		s.persistRun(*created)
	}
	s.view.putExperiment(ve)
	vf, _, err := update(ctx, s.kv, runKey(failed.RunID), func(r *RunRecord) (bool, error) {
		if r.RetriedAs != "" {
			return false, nil
		}
		r.RetriedAs = rr.RunID
		r.Reason += " (retried as " + rr.RunID + ")"
		if delay > 0 {
			r.Reason += " after a " + delay.String() + " back-off"
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	s.view.putRun(vf)
	s.persistRun(vf)
	s.logger.Info("run will be retried", zap.String("run_id", failed.RunID), zap.String("retry_run_id", rr.RunID), zap.String("reason", failed.Reason),
		zap.Duration("backoff", delay))
	return nil
}
