package scheduler

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// handler is the scheduler's consumer: submissions and cancellations, and
// the other services' answers to the commands its runs sent. Every handler
// is safe to run twice (a redelivery changes nothing).
func (s *Scheduler) handler() bus.Handler {
	return bus.Router("scheduler",
		bus.On(s.submit),
		bus.On(s.cancel),
		bus.On(func(ctx context.Context, m *events.RunProvisioned) error {
			return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return s.onProvisioned(ctx, r, m) })
		}),
		bus.On(func(ctx context.Context, m *events.RunProvisionFailed) error {
			return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return s.onProvisionFailed(ctx, r, m) })
		}),
		bus.On(func(ctx context.Context, m *events.LoadFinished) error {
			return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return onLoadFinished(r, m), nil })
		}),
		bus.On(func(ctx context.Context, m *events.RunTornDown) error {
			return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return s.onTornDown(ctx, r, m) })
		}),
		bus.On(func(ctx context.Context, m *events.RunAnalyzed) error {
			return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return s.onAnalyzed(ctx, r, m) })
		}))
}

// onRun applies fn to a run; unknown runs are rejected permanently.
func (s *Scheduler) onRun(ctx context.Context, runID string, fn func(*RunRecord) (bool, error)) error {
	r, changed, err := s.updateRun(ctx, runID, fn)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return bus.Permanent(fmt.Errorf("unknown run %s", runID))
	}
	if err != nil {
		return err
	}
	if changed {
		return s.refreshExperiment(ctx, r.Value.ExperimentID)
	}
	return nil
}

// onProvisioned hands the run's measurement targets to the collectors and
// starts the baseline.
func (s *Scheduler) onProvisioned(ctx context.Context, r *RunRecord, m *events.RunProvisioned) (bool, error) {
	if r.State != events.RunStateProvisioning {
		return false, nil
	}
	r.Targets = m.Targets
	if err := s.bus.Publish(ctx, events.CollectAssign{ExperimentID: r.ExperimentID, RunID: r.RunID, Targets: m.Targets,
		Meters: r.Config.Meters.Collect()}, "collect.assign:"+r.RunID); err != nil {
		return false, err
	}
	return true, s.transition(ctx, r, events.RunStateBaseline)
}

// onProvisionFailed fails the run; a transient cause (e.g. a broker or API
// server that was down) is retried as a new run.
func (s *Scheduler) onProvisionFailed(ctx context.Context, r *RunRecord, m *events.RunProvisionFailed) (bool, error) {
	if r.State != events.RunStateProvisioning {
		return false, nil
	}
	r.Reason = "provisioning failed: " + m.Reason
	r.Transient = m.Transient
	return true, s.fail(ctx, r)
}

// onLoadFinished keeps the load generator's account of the load on the run
// (passed on to the analyzer in run.measured); a failed load fails the run
// at the next tick (advance).
func onLoadFinished(r *RunRecord, m *events.LoadFinished) bool {
	if r.LoadDone || events.RunFinal(r.State) {
		return false
	}
	r.LoadDone, r.RecordsSent = true, m.RecordsSent
	r.RecordsDelivered, r.DeliveredFromBroker = m.RecordsDelivered, m.DeliveredFromBroker
	r.RecordsMissed, r.RecordsBackfilled = m.RecordsMissed, m.RecordsBackfilled
	r.LoadTakeovers, r.LoadRestarts = m.Takeovers, m.Restarts
	if m.Failed {
		r.LoadFailed, r.LoadPermanent = m.Reason, m.Permanent
	} else {
		r.LoadNote = m.Reason
	}
	return true
}

// onTornDown applies the provisioner's report on a run's teardown:
//
//   - Incomplete: removal is still going on; its cause is kept for the
//     teardown timeout's reason, and the run keeps waiting.
//   - Crashed: the system under test had died on its own: the run fails
//     (transient) unless it is already final.
//   - Lost: the provisioner has no record of the run or cannot find its
//     system under test, so nothing vouches that it ran throughout: the run
//     fails (transient) unless it is already final.
//   - otherwise a clean teardown.
func (s *Scheduler) onTornDown(ctx context.Context, r *RunRecord, m *events.RunTornDown) (bool, error) {
	if r.TornDown {
		return false, nil // an answer to a re-sent command, or a late report
	}
	// A crash or a lost SUT fails the run at once, even while removal is
	// still going on (the provisioner reports a crash as soon as it sees
	// it, with Incomplete set, and again when everything is removed).
	switch {
	case m.Crashed && !events.RunFinal(r.State):
		r.TornDown = !m.Incomplete
		r.Reason = "system under test crashed: " + m.Reason
		r.Transient = true
		return true, s.fail(ctx, r)
	case m.Lost && !events.RunFinal(r.State):
		r.TornDown = !m.Incomplete
		r.Reason = "system under test lost: the provisioner cannot vouch that it ran throughout: " + m.Reason
		r.Transient = true
		return true, s.fail(ctx, r)
	case m.Incomplete:
		if m.Reason == "" || m.Reason == r.TeardownIssue {
			return false, nil
		}
		r.TeardownIssue = m.Reason
		return true, nil
	}
	r.TornDown = true
	return true, nil
}

// invalidMeasurement starts the reason of a run failed by its analysis
// (the capacity search tells such probes apart).
const invalidMeasurement = "invalid measurement: "

// onAnalyzed ends an analysed run: done with the analysis's flags, or, when
// the measurement broke the platform's invariant (the load not delivered,
// samples missing), failed — never done; a new attempt may well succeed.
func (s *Scheduler) onAnalyzed(ctx context.Context, r *RunRecord, m *events.RunAnalyzed) (bool, error) {
	if r.State != events.RunStateAnalyzing {
		return false, nil
	}
	r.Flags = m.Flags
	if m.Invalid {
		r.Reason = invalidMeasurement + m.Reason
		r.Transient = true
		return true, s.fail(ctx, r)
	}
	return true, s.transition(ctx, r, events.RunStateDone)
}
