package scheduler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// The run state machine: a run moves pending → provisioning → baseline →
// warmup → measuring → cooldown → teardown → analyzing → done, or to failed
// or cancelled. Other services' answers move it (handlers.go); its clock
// moves it through the timed phases and times out the waiting ones
// (advance, called by the tick).

// updateRun is the one way run records change: a revision-checked write
// and, when something changed, its commit (view, row, entry command, state
// event) — under one lock, so that a run's events are published in the
// order its states were written, whichever goroutine wrote them.
func (s *Scheduler) updateRun(ctx context.Context, runID string, fn func(*RunRecord) (bool, error)) (versioned[RunRecord], bool, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	r, changed, err := update(ctx, s.kv, runKey(runID), fn)
	if err == nil && changed {
		s.commit(ctx, r)
	}
	return r, changed, err
}

// transition enters state and sets its deadline. Its entry command and the
// state event are published by commit once the record is written, so no
// answer can arrive before the state it answers is stored.
func (s *Scheduler) transition(_ context.Context, r *RunRecord, state string) error {
	now := s.nowMs()
	at := now
	// The measured window and the cool-down begin when the phase before
	// them was due to end, not when the scheduler got to it: after a
	// restart or a stall across that moment, entering at now would slide
	// the window past the load (which runs warm-up + measure from its own
	// start) and shorten the load in it. The warm-up is entered at now: its
	// entry starts the load.
	if (state == events.RunStateMeasuring || state == events.RunStateCooldown) && r.PhaseEndMs > 0 && r.PhaseEndMs < now {
		at = r.PhaseEndMs
	}
	r.enter(state, at)
	ph := r.Config.Phases
	switch state {
	case events.RunStateBaseline:
		r.PhaseEndMs = at + ph.Baseline.Milliseconds()
	case events.RunStateWarmup:
		r.PhaseEndMs = at + ph.Warmup.Milliseconds()
	case events.RunStateMeasuring:
		r.PhaseEndMs = at + ph.Measure.Milliseconds()
	case events.RunStateCooldown:
		r.PhaseEndMs = at + ph.Cooldown.Milliseconds()
	}
	return nil
}

// fail ends a run as failed (its Reason and Transient set by the caller),
// first stopping what it started.
func (s *Scheduler) fail(ctx context.Context, r *RunRecord) error {
	if r.State != events.RunStatePending && !r.TornDown {
		s.stopRun(ctx, r)
	}
	return s.transition(ctx, r, events.RunStateFailed)
}

// commit runs after a run record was written: it updates the local view,
// stores the row in ClickHouse and, when the update entered a state,
// publishes the state's command and the state event (message ids derived
// from run and state, so doing this twice is harmless).
func (s *Scheduler) commit(ctx context.Context, vr versioned[RunRecord]) {
	s.view.putRun(vr)
	s.persistRun(vr)
	r := &vr.Value
	if !r.entered {
		return
	}
	delete(s.resent, r.RunID) // a new state: its command's attempts count from 0
	if set, ok := s.view.slots(clusterOf(*r)); ok && events.RunFinal(r.State) && slices.Contains(set.Runs, r.RunID) {
		if err := s.releaseSlot(ctx, *r); err != nil {
			// Reclaimed when the slot is next needed.
			s.logger.Warn("release run slot failed", zap.String("run_id", r.RunID), zap.Error(err))
		}
	}
	if err := s.publishCommand(ctx, r, 0); err != nil {
		// The resend in advance() publishes it again.
		s.logger.Warn("publish entry command failed", zap.String("run_id", r.RunID), zap.String("state", r.State), zap.Error(err))
	}
	s.transitions.WithLabelValues(r.State).Inc()
	s.logger.Info("run state", zap.String("experiment_id", r.ExperimentID), zap.String("run_id", r.RunID), zap.String("state", r.State),
		zap.String("reason", r.Reason))
	// A run that entered no phase ended while pending: no command was ever
	// sent for it (commands follow the write of their state).
	neverStarted := events.RunFinal(r.State) && len(r.Phases) == 0
	if err := s.bus.Publish(ctx, events.RunState{ExperimentID: r.ExperimentID, RunID: r.RunID, Index: r.Index, State: r.State, Reason: r.Reason,
		PhaseEndMs: r.PhaseEndMs, NeverStarted: neverStarted, TsMs: r.EnteredMs}, "run.state:"+r.RunID+":"+r.State); err != nil {
		s.logger.Warn("publish run state failed", zap.String("run_id", r.RunID), zap.Error(err))
	}
	if r.retryDue(s.cfg.Retries) {
		if err := s.retry(ctx, *r); err != nil {
			s.logger.Error("schedule retry failed", zap.String("run_id", r.RunID), zap.Error(err))
		}
	}
}

// advance performs a run's due timed transition or timeout, if any;
// otherwise it re-sends the command the run waits on when an answer is
// overdue.
func (s *Scheduler) advance(ctx context.Context, runID string, now int64) error {
	r, changed, err := s.updateRun(ctx, runID, func(r *RunRecord) (bool, error) {
		step := dueStep(*r, now, s.cfg)
		switch {
		case step.next == "":
			s.resend(ctx, r, now)
			return false, nil
		case step.next != events.RunStateFailed:
			return true, s.transition(ctx, r, step.next)
		}
		r.Reason, r.Transient = step.reason, !step.permanent
		if step.stop {
			return true, s.fail(ctx, r)
		}
		return true, s.transition(ctx, r, events.RunStateFailed)
	})
	if err != nil {
		return err
	}
	if changed {
		return s.refreshExperiment(ctx, r.Value.ExperimentID)
	}
	return nil
}

// step is what a run's clock decides: nothing (next empty), the next
// timed state, or a failure with its reason — transient unless permanent
// (a load the generators could not keep up with: a retry repeats it) —
// and whether what the run started must be stopped first.
type step struct {
	next      string
	reason    string
	stop      bool
	permanent bool
}

// dueStep decides a run's timed transition or timeout at now (ms).
func dueStep(r RunRecord, now int64, cfg Config) step {
	timedOut := func(d time.Duration) bool { return now-r.EnteredMs > d.Milliseconds() }
	failed := func(stop bool, format string, args ...any) step {
		return step{next: events.RunStateFailed, reason: fmt.Sprintf(format, args...), stop: stop}
	}
	phaseOver := now >= r.PhaseEndMs
	if r.LoadFailed != "" && (r.State == events.RunStateWarmup || r.State == events.RunStateMeasuring || r.State == events.RunStateCooldown) {
		st := failed(true, "load generator failed: %s", r.LoadFailed)
		st.permanent = r.LoadPermanent
		return st
	}
	switch r.State {
	case events.RunStateProvisioning:
		if timedOut(cfg.ProvisionTimeout) {
			return failed(true, "provisioning timed out after %s", cfg.ProvisionTimeout)
		}
	case events.RunStateBaseline:
		if phaseOver {
			return step{next: events.RunStateWarmup}
		}
	case events.RunStateWarmup:
		if phaseOver {
			return step{next: events.RunStateMeasuring}
		}
	case events.RunStateMeasuring:
		if phaseOver {
			return step{next: events.RunStateCooldown}
		}
	case events.RunStateCooldown:
		switch {
		case !phaseOver:
		case r.LoadDone:
			return step{next: events.RunStateTeardown}
		case now-r.PhaseEndMs > cfg.LoadGrace.Milliseconds():
			return failed(true, "load generator did not report finishing within %s of the measured phase", cfg.LoadGrace)
		}
	case events.RunStateTeardown:
		if r.TornDown {
			return step{next: events.RunStateAnalyzing}
		}
		if timedOut(cfg.TeardownTimeout) {
			st := failed(false, "teardown not confirmed within %s", cfg.TeardownTimeout)
			if r.TeardownIssue != "" {
				st.reason += ": " + r.TeardownIssue
			}
			return st
		}
	case events.RunStateAnalyzing:
		if timedOut(cfg.AnalyzeTimeout) {
			return failed(false, "analysis not reported within %s", cfg.AnalyzeTimeout)
		}
	}
	return step{}
}
