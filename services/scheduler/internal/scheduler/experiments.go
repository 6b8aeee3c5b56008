package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
)

// submit takes a submission: an invalid spec fails the experiment, a spec
// with a trigger (a template) is armed, and any other is queued for the
// expander — its spec written on the experiment's pending record, one
// revision-checked write — and the message acked. Expanding a large sweep
// takes a minute (100,000 runs), which the consumer spent on it before,
// every other experiment's events waiting behind.
func (s *Scheduler) submit(ctx context.Context, m *events.ExperimentSubmit) error {
	var existing ExperimentRecord
	if _, err := s.kv.get(ctx, expKey(m.ExperimentID), &existing); err == nil && !existing.Pending {
		return nil // redelivery: already accepted
	} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	e, err := spec.Parse([]byte(m.Spec), nil)
	if err != nil {
		return s.failSubmission(ctx, m.ExperimentID, "", m.Spec, "invalid spec: "+err.Error(), true)
	}
	if e.Spec.Trigger != nil {
		if err := s.arm(ctx, e); bus.IsPermanent(err) {
			return s.failSubmission(ctx, m.ExperimentID, e.Metadata.Name, m.Spec, "trigger not armed: "+err.Error(), true)
		} else if err != nil {
			return err
		}
		return nil
	}
	ve, _, err := upsert(ctx, s.kv, expKey(m.ExperimentID), func(cur *ExperimentRecord, found bool) (bool, error) {
		switch {
		case !found:
			*cur = ExperimentRecord{ID: m.ExperimentID, Name: e.Metadata.Name, State: events.ExperimentStateSubmitted, RunIDs: []string{},
				CreatedMs: s.nowMs(), Pending: true, Labels: e.Metadata.Labels}
		case !cur.Pending || cur.Spec != "":
			return false, nil // accepted meanwhile, or queued already
		}
		cur.Spec, cur.SubmittedBy = m.Spec, m.SubmittedBy
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("queue the expansion of experiment %s: %w", m.ExperimentID, err)
	}
	s.view.putExperiment(ve)
	s.wakeExpander()
	return nil
}

// expand accepts a queued experiment: it expands the spec, stores every run
// (KV and ClickHouse) and the experiment's ClickHouse row, and settles the
// experiment's key last — a settled (not pending) record means "accepted",
// so an expansion a crash interrupted is done again from its pending record.
// An experiment cancelled while pending (submission.go) gets no runs; one
// cancelled while its runs were being created has them cancelled by the
// sweep (sweep.go).
func (s *Scheduler) expand(ctx context.Context, existing ExperimentRecord) error {
	m := &events.ExperimentSubmit{ExperimentID: existing.ID, Spec: existing.Spec, SubmittedBy: existing.SubmittedBy}
	cancelledFirst := existing.State == events.ExperimentStateCancelled
	e, err := spec.Parse([]byte(m.Spec), nil)
	if err != nil {
		return s.failSubmission(ctx, m.ExperimentID, "", m.Spec, "invalid spec: "+err.Error(), true)
	}
	now := s.nowMs()
	// The order's seed, when the spec gives none, is the time the record
	// was first written — not this expansion's: every scheduler's expander
	// may take a queued record up, and one taking up another's expansion cut
	// short keeps the runs already created, so all must draw the same plan.
	seed := existing.CreatedMs
	if seed == 0 {
		seed = now
	}
	plan, err := e.Expand(m.ExperimentID, seed)
	if err != nil {
		return s.failSubmission(ctx, m.ExperimentID, e.Metadata.Name, m.Spec, "expand the spec: "+err.Error(), true)
	}
	tb, tbErr := s.testbed()
	if tbErr != "" {
		s.logger.Warn("testbed reservation unreadable; the experiment's provenance says so", zap.String("experiment_id", m.ExperimentID),
			zap.String("file", s.cfg.TestbedReservationFile), zap.String("reason", tbErr))
	}
	rec := ExperimentRecord{ID: m.ExperimentID, Name: e.Metadata.Name, State: events.ExperimentStateQueued, Seed: plan.Seed, CreatedMs: now,
		Labels: e.Metadata.Labels, SubmittedBy: m.SubmittedBy, Testbed: tb}
	for _, r := range plan.Runs {
		rec.RunIDs = append(rec.RunIDs, r.ID)
	}
	if q := e.Spec.Search; q != nil {
		rec.Search = &SearchState{Search: *q, Repetitions: e.Spec.Repetitions, MinRatio: e.Spec.SLOs.MinThroughputRatio,
			Probes: []Probe{{Rate: q.Start, Runs: slices.Clone(rec.RunIDs)}}}
	}
	if cancelledFirst {
		// Cancelled before any run existed: none is created.
		rec.RunIDs, rec.Search = []string{}, nil
		rec.State = events.ExperimentStateCancelled
	} else {
		rows, err := s.createRuns(ctx, m.ExperimentID, plan.Runs, now)
		if err != nil {
			return err
		}
		if err := s.store.UpsertRuns(ctx, rows); err != nil {
			return err // retried: nothing is queued until the runs are stored
		}
	}
	if existing.CreatedMs != 0 {
		rec.CreatedMs = existing.CreatedMs // when the API accepted it
	}
	labels, _ := json.Marshal(e.Metadata.Labels)
	resolved, _ := json.Marshal(e)
	if err := s.store.UpsertExperiment(ctx, store.Experiment{ExperimentID: m.ExperimentID, Name: e.Metadata.Name, Spec: string(resolved),
		SpecHash: spec.Hash(e), RunsTotal: uint32(len(rec.RunIDs)), State: rec.State, Labels: string(labels),
		GreenflowVersion: s.cfg.Version, GitCommit: s.cfg.Commit, Environment: environmentJSON(tb, tbErr), Seed: plan.Seed, CreatedMs: rec.CreatedMs}); err != nil {
		return err // retried: nothing is queued until the record is stored
	}
	ve, settled, err := s.settleSubmission(ctx, rec)
	if err != nil {
		return err
	}
	s.view.putExperiment(ve)
	if !settled {
		return nil
	}
	if ve.Value.State == events.ExperimentStateCancelled {
		// Cancelled while pending: settled with Cancelling set, so the
		// sweep cancels its runs (if any were created) and announces it.
		s.logger.Info("experiment cancelled before it was accepted", zap.String("experiment_id", m.ExperimentID),
			zap.Int("runs", len(ve.Value.RunIDs)), zap.String("reason", ve.Value.Reason))
		s.wakeSweep()
		return nil
	}
	s.logger.Info("experiment accepted", zap.String("experiment_id", m.ExperimentID), zap.String("name", rec.Name), zap.Int("runs", len(plan.Runs)))
	s.publishExperiment(ctx, ve.Value, tally{})
	return nil
}

// createRuns creates the planned runs' keys, pending, with a bounded pool
// (one KV round trip each), and returns their rows. A key that exists
// already (a crash before the experiment key was written) is kept as
// stored.
func (s *Scheduler) createRuns(ctx context.Context, experimentID string, runs []spec.Run, now int64) ([]store.Run, error) {
	rows := make([]store.Run, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rr := RunRecord{ExperimentID: experimentID, RunID: r.ID, Index: r.Index, Repetition: r.Repetition, Factors: r.Factors,
				Config: r.Config, ConfigHash: r.ConfigHash, State: events.RunStatePending, EnteredMs: now, CreatedMs: now}
			rev, err := s.kv.create(ctx, runKey(r.ID), rr)
			if errors.Is(err, jetstream.ErrKeyExists) {
				rev, err = s.kv.get(ctx, runKey(r.ID), &rr)
			}
			if err != nil {
				errs[i] = fmt.Errorf("store run %s: %w", r.ID, err)
				return
			}
			vr := versioned[RunRecord]{rr, rev}
			s.view.putRun(vr)
			rows[i] = runRow(vr)
		}()
	}
	wg.Wait()
	return rows, errors.Join(errs...)
}

// failSubmission stores a submission that cannot become an experiment
// (invalid spec, expansion error, dead-lettered) as a failed experiment with
// its reason, so that an id the API handed out always appears in list and
// status, and announces it. An accepted (or already recorded) experiment is
// left alone. With needRow, a failure to store the ClickHouse row is
// returned (the message is retried); without, the KV record is enough.
func (s *Scheduler) failSubmission(ctx context.Context, id, name, specText, reason string, needRow bool) error {
	var existing ExperimentRecord
	if _, err := s.kv.get(ctx, expKey(id), &existing); err == nil && !existing.Pending {
		return nil
	} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read experiment %s: %w", id, err)
	}
	now := s.nowMs()
	// What the API recorded when it accepted the submission (pending) fills
	// in what the failure does not know: the name of a spec that does not
	// parse or of a dead-lettered submission, its labels, and when it was
	// submitted, rather than when it failed.
	if name == "" {
		name = existing.Name
	}
	created := now
	if existing.CreatedMs != 0 {
		created = existing.CreatedMs
	}
	labels := "{}"
	if len(existing.Labels) > 0 {
		if b, err := json.Marshal(existing.Labels); err == nil {
			labels = string(b)
		}
	}
	if err := s.store.UpsertExperiment(ctx, store.Experiment{ExperimentID: id, Name: name, Spec: specText, State: events.ExperimentStateFailed,
		Labels: labels, GreenflowVersion: s.cfg.Version, GitCommit: s.cfg.Commit, Environment: environmentJSON(s.testbed()), CreatedMs: created}); err != nil {
		if needRow {
			return err
		}
		s.logger.Warn("store failed experiment row failed", zap.String("experiment_id", id), zap.Error(err))
	}
	rec := ExperimentRecord{ID: id, Name: name, State: events.ExperimentStateFailed, Reason: reason, RunIDs: []string{}, CreatedMs: now}
	ve, settled, err := s.settleSubmission(ctx, rec)
	if err != nil {
		return fmt.Errorf("store failed experiment %s: %w", id, err)
	}
	s.view.putExperiment(ve)
	if !settled {
		return nil
	}
	s.logger.Warn("experiment failed at submission", zap.String("experiment_id", id), zap.String("reason", reason))
	s.publishExperiment(ctx, ve.Value, tally{})
	return nil
}

// onDeadLetter answers a command the consumer gave up on (undecodable,
// out of deliveries, a handler panic): a submission is recorded as a failed
// experiment with the dead-letter reason; a cancel of a known experiment is
// carried out here — the experiment marked, as the cancel's handler does,
// and the sweep stops and cancels its runs — so that a cancel whose handler
// died with its process, run after run, still takes effect.
func (s *Scheduler) onDeadLetter(ctx context.Context, h nats.Header, body []byte, reason string) {
	id := h.Get(bus.HeaderExperiment)
	if id == "" {
		return
	}
	switch events.Type(h.Get(bus.HeaderType)) {
	case events.TypeExperimentSubmit:
		var rec ExperimentRecord
		if _, err := s.kv.get(ctx, expKey(id), &rec); err == nil && rec.Pending && rec.Spec != "" {
			return // queued: the expander's, whatever became of the message
		}
		// The row says what was submitted when the body says it: its spec,
		// and its name when the spec parses. (The hook never sees an
		// unverified message; an undecodable one's body does not decode
		// here either, and failSubmission takes the name from the API's
		// pending record.)
		name, specText := "", ""
		ver, _ := strconv.Atoi(h.Get(bus.HeaderVersion))
		if m, err := events.Decode(events.TypeExperimentSubmit, ver, body); err == nil && m.(*events.ExperimentSubmit).ExperimentID == id {
			specText = m.(*events.ExperimentSubmit).Spec
			if e, err := spec.Parse([]byte(specText), nil); err == nil {
				name = e.Metadata.Name
			}
		}
		if err := s.failSubmission(ctx, id, name, specText, "submission dead-lettered: "+reason, false); err != nil {
			s.logger.Error("record dead-lettered submission failed", zap.String("experiment_id", id), zap.Error(err))
		}
	case events.TypeExperimentCancel:
		// One write, well within the bus's few seconds for a hook's
		// answer: the runs are the sweep's.
		err := s.cancel(ctx, &events.ExperimentCancel{ExperimentID: id, Reason: "cancel dead-lettered (" + reason + "), carried out by its dead-letter hook"})
		if err != nil && !bus.IsPermanent(err) {
			s.logger.Error("carry out a dead-lettered cancel failed", zap.String("experiment_id", id), zap.Error(err))
		}
	}
}

// cancel ends an experiment: it marks it cancelled, with Cancelling set,
// and returns; the sweep (sweep.go) stops its started runs, cancels every
// unfinished one and announces it, a chunk at a time, between the
// consumer's other messages. Marked, the experiment starts no more runs
// (the tick starts runs of live experiments only).
//
// A repeated cancel of a cancelled experiment sets Cancelling again, so it
// is stored and announced again (idempotent: the rows are replaced, the
// state event deduplicated by its id): an experiment cancelled by a
// scheduler that announced only after walking its runs may never have been
// announced.
func (s *Scheduler) cancel(ctx context.Context, m *events.ExperimentCancel) error {
	ve, _, err := update(ctx, s.kv, expKey(m.ExperimentID), func(x *ExperimentRecord) (bool, error) {
		switch {
		case x.State == events.ExperimentStateCancelled:
			if x.Cancelling || x.Pending {
				return false, nil // under way, or the submission's to settle
			}
		case events.ExperimentFinal(x.State):
			return false, nil
		default:
			x.State, x.Reason = events.ExperimentStateCancelled, m.Reason
		}
		// Not expanded yet (pending): the submission's consumer settles
		// it with no runs and sets Cancelling (submission.go).
		x.Cancelling = !x.Pending
		return true, nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return bus.Permanent(fmt.Errorf("unknown experiment %s", m.ExperimentID))
	}
	if err != nil {
		return err
	}
	s.view.putExperiment(ve)
	s.wakeSweep()
	return nil
}

// refreshExperiment recomputes an experiment's state from its runs (as the
// local view has them) and publishes it when it changed.
func (s *Scheduler) refreshExperiment(ctx context.Context, id string) error {
	cur, ok := s.view.experiment(id)
	if !ok {
		return nil
	}
	t := s.view.counts(cur, s.cfg.Retries)
	// The rows go first: the API answers from the bucket, so a user told
	// the experiment is final reads its runs from ClickHouse at once. They
	// are the view's runs that make it final (newer revisions only win);
	// an update that then finds it final already, or not yet, wrote rows
	// that are right anyway. Not stored, it is not made final: the tick
	// refreshes it again.
	stored := false
	if next := experimentState(cur, t); next != cur.State && events.ExperimentFinal(next) {
		if s.storeFinalRows(ctx, cur) != nil {
			return nil // logged
		}
		stored = true
	}
	ve, changed, err := update(ctx, s.kv, expKey(id), func(e *ExperimentRecord) (bool, error) {
		state := experimentState(*e, t)
		if state == e.State {
			return false, nil
		}
		if events.ExperimentFinal(state) && (!stored || !slices.Equal(e.RunIDs, cur.RunIDs)) {
			return false, nil // the view lags the record: a later refresh stores and ends it
		}
		e.State = state
		return true, nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	e := ve.Value
	s.view.putExperiment(ve)
	final := events.ExperimentFinal(e.State)
	if changed {
		if err := s.store.SetExperimentState(ctx, id, e.State); err != nil {
			s.logger.Warn("store experiment state failed", zap.String("experiment_id", id), zap.Error(err))
		}
	}
	// A final state is announced only by the update that set it (its rows
	// stored before); progress of an unfinished one by anyone.
	if changed || (t.final() > 0 && !final) {
		s.publishExperiment(ctx, e, t)
	}
	return nil
}

// experimentState is an experiment's state given its runs' counts: queued
// until a run starts, running until every run is final, then done when at
// least one is done, otherwise failed. A capacity search runs until it has
// concluded, whatever its runs' counts; a cancelled experiment stays
// cancelled, one failed at submission stays failed, and one not expanded
// yet (pending) stays as it is.
func experimentState(e ExperimentRecord, t tally) string {
	searching := e.Search != nil && !e.Search.Done
	total := len(e.RunIDs)
	switch {
	case e.Pending:
		return e.State
	case e.State == events.ExperimentStateCancelled || e.State == events.ExperimentStateFailed && t.final() == total:
		return e.State
	case searching && t.started > 0:
		return events.ExperimentStateRunning
	case searching:
		return e.State
	case t.final() == total && t.done == 0:
		return events.ExperimentStateFailed
	case t.final() == total:
		return events.ExperimentStateDone
	case t.started > 0:
		return events.ExperimentStateRunning
	}
	return e.State
}

// publishExperiment announces an experiment's state and progress; the
// message id holds both, so each distinct announcement is published once.
// runs_failed counts failed runs only, not cancelled ones. A failure is
// logged and returned.
func (s *Scheduler) publishExperiment(ctx context.Context, e ExperimentRecord, t tally) error {
	msgID := fmt.Sprintf("experiment.state:%s:%s:%d:%d:%d", e.ID, e.State, t.done, t.failed, t.cancelled)
	if err := s.bus.Publish(ctx, events.ExperimentState{ExperimentID: e.ID, Name: e.Name, State: e.State, RunsTotal: len(e.RunIDs),
		RunsDone: t.done, RunsFailed: t.failed, Reason: e.Reason, TsMs: s.nowMs()}, msgID); err != nil {
		s.logger.Warn("publish experiment state failed", zap.String("experiment_id", e.ID), zap.Error(err))
		return fmt.Errorf("announce experiment %s %s: %w", e.ID, e.State, err)
	}
	return nil
}
