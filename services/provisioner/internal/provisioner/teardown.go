package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// teardown records that the run's teardown is wanted; the reconciler of
// an instance that can remove it (any one for a cluster run, one on its
// node for a local run) carries it out and reports. A run with no record
// anywhere is reported lost, never torn down cleanly: nothing shows its
// system under test ran throughout. A repeated teardown of a torn-down run
// gets the same report again.
func (p *Provisioner) teardown(ctx context.Context, m *events.RunTeardown) error {
	be, ok := p.backends[m.Backend]
	if !ok {
		return bus.Permanent(fmt.Errorf("backend %q is not enabled in this provisioner", m.Backend))
	}
	entries, err := p.records(ctx, m.Backend, m.RunID)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		created, err := p.recordUnknown(ctx, be, m)
		if err != nil || created {
			p.poke()
			return err
		}
		if entries, err = p.records(ctx, m.Backend, m.RunID); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if e.Rec.State == state.TornDown && e.Rec.Result != nil {
			if err := p.bus.Publish(ctx, *e.Rec.Result, "torn-down:"+m.RunID); err != nil {
				return err
			}
			continue
		}
		if _, err := p.requestTeardown(ctx, e.Key, "teardown command", true, m.Kafka); err != nil {
			return err
		}
	}
	p.poke()
	return nil
}

// records finds the record of a run.
func (p *Provisioner) records(ctx context.Context, backend, runID string) ([]state.Entry, error) {
	be := p.backends[backend]
	e, err := p.store.Get(ctx, be.Key(runID))
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []state.Entry{e}, nil
}

// recordUnknown records the teardown of a run with no record. What of it
// can still be found here (marked processes, its namespace) is removed;
// a local run found only by its markers, or nothing found at all, is
// reported lost. A cluster run whose namespace is there is not: the
// namespace carries all the record would.
func (p *Provisioner) recordUnknown(ctx context.Context, be Backend, m *events.RunTeardown) (bool, error) {
	rec := state.Record{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.Backend, State: state.Stopping, Kafka: m.Kafka,
		Teardown: &state.Teardown{RequestedMs: p.now().UnixMilli(), Cause: "teardown command", Report: true, From: "unknown"}}
	if n, ok := be.(noder); ok {
		rec.Node = n.Node()
	}
	sw, ok := be.(Sweeper)
	if !ok {
		// This instance cannot look (no cluster access): the command comes
		// again, to an instance that can, or is answered lost at the end.
		return false, fmt.Errorf("backend %s is not available in this provisioner to look for run %s", m.Backend, m.RunID)
	}
	all, err := sw.Leftovers(ctx)
	if err != nil {
		return false, fmt.Errorf("look for what is left of run %s: %w", m.RunID, err)
	}
	var found []state.Leftover
	for _, l := range all {
		if l.RunID == m.RunID {
			found = append(found, l)
		}
	}
	where := m.Backend
	if rec.Node != "" {
		where = "node " + rec.Node
	}
	switch {
	case len(found) == 0:
		rec.Teardown.Lost = true
		rec.Teardown.LostReason = fmt.Sprintf("the provisioner has no record of run %s and found nothing of it on %s: it was never provisioned "+
			"by this installation, or its record was lost, so nothing shows its system under test ran throughout", m.RunID, where)
	case found[0].Kind == "namespace":
		rec.Teardown.From = state.Running // the namespace is its record
	default:
		rec.Teardown.Lost = true
		rec.Teardown.LostReason = fmt.Sprintf("the provisioner has no record of run %s, so its system under test was not watched; "+
			"its leftover %s are stopped", m.RunID, found[0].What)
	}
	if rec.Kafka == nil {
		for _, l := range found {
			if l.Kafka != nil {
				rec.Kafka = l.Kafka
			}
		}
	}
	_, created, err := p.store.Create(ctx, be.Key(m.RunID), rec)
	if created {
		p.logger.Warn("teardown of a run with no record", zap.String("run_id", m.RunID), zap.String("backend", m.Backend),
			zap.Bool("lost", rec.Teardown.Lost), zap.Int("leftovers", len(found)))
	}
	return created, err
}

// requestTeardown records that a run's teardown is wanted (once; report
// asks for run.torn_down to be published).
func (p *Provisioner) requestTeardown(ctx context.Context, key, cause string, report bool, kafka *events.Kafka) (state.Entry, error) {
	e, _, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		if r.State == state.TornDown {
			return false, nil
		}
		changed := false
		if r.Teardown == nil {
			r.Teardown = &state.Teardown{RequestedMs: p.now().UnixMilli(), Cause: cause, From: r.State}
			r.State = state.Stopping
			changed = true
		}
		if report && !r.Teardown.Report {
			r.Teardown.Report, changed = true, true
		}
		if r.Kafka == nil && kafka != nil {
			r.Kafka, changed = kafka, true
		}
		return changed, nil
	})
	if err != nil {
		return e, fmt.Errorf("record the teardown of %s: %w", key, err)
	}
	return e, nil
}

// Crashed is told by a backend that a running run's SUT exited on its own
// (or, on a cluster, restarted). The run is reported crashed at once —
// the scheduler fails it — and its teardown is recorded for the reconciler,
// which reports again once nothing is left. Several instances may notice
// the same crash: the revision-checked write lets one of them report it.
func (p *Provisioner) Crashed(backend, runID, reason string) {
	be, ok := p.backends[backend]
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, changed, err := p.store.Mutate(ctx, be.Key(runID), func(r *state.Record) (bool, error) {
		if r.State != state.Running || r.Teardown != nil {
			return false, nil
		}
		if pr := r.Process; pr != nil && pr.Signalled && !pr.StoppedAtShutdown {
			return false, nil // stopped on purpose
		}
		r.State = state.Stopping
		r.Teardown = &state.Teardown{RequestedMs: p.now().UnixMilli(), Cause: "crash", Report: true, Crashed: true, CrashReason: reason,
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
		Reason: reason, TsMs: p.now().UnixMilli()}, "crashed:"+runID); err != nil {
		p.logger.Error("publish crash failed", zap.String("run_id", runID), zap.Error(err))
	}
}

// attemptDue reports a wanted teardown that may be attempted now: not torn
// down, its back-off over — or its last attempt's instance gone (a process
// of this machine that died mid-attempt) — and no provision holding it.
func (p *Provisioner) attemptDue(r state.Record, now time.Time) bool {
	td := r.Teardown
	if r.State == state.TornDown || td == nil {
		return false
	}
	if now.UnixMilli() < td.NextMs && !(td.Owner != "" && p.holderGone(td.Owner, td.OwnerProc)) {
		return false
	}
	return r.LeaseUntilMs <= now.UnixMilli() || p.holderGone(r.Owner, r.OwnerProc)
}

// attempt is one try at a wanted teardown: the SUT and the topics are
// removed independently, the outcome is recorded, and — when a command
// asked or the SUT crashed — reported: torn down when nothing is left,
// incomplete with the cause otherwise (each attempt its own message id, so
// de-duplication does not swallow it). The attempt holds the record's
// teardown until NextMs, so other instances leave it alone meanwhile.
func (p *Provisioner) attempt(ctx context.Context, key string) {
	claimed, ok, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		now := p.now()
		td := r.Teardown
		if !p.attemptDue(*r, now) {
			return false, nil
		}
		be, ok := p.backends[r.Backend]
		if !ok || !be.Owns(*r) {
			return false, nil
		}
		td.Attempts++
		td.NextMs = now.Add(be.TeardownBound() + 30*time.Second).UnixMilli()
		td.Owner, td.OwnerProc = p.cfg.Instance, p.selfProc()
		r.State = state.Stopping
		return true, nil
	})
	if err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("claim a teardown failed", zap.String("key", key), zap.Error(err))
		}
		return
	}
	r := claimed.Rec
	be := p.backends[r.Backend]
	start := p.now()
	td := *r.Teardown
	var sutErr, topicErr error
	crashed, crashReason := false, ""
	if !td.SUTRemoved {
		crashed, crashReason, sutErr = be.Remove(ctx, r.RunID, &claimed)
	}
	if !td.TopicsRemoved {
		topicErr = p.removeTopics(ctx, be, r.RunID, r.Kafka)
	}
	if ctx.Err() != nil {
		return // shutting down: the lease runs out and any instance carries on
	}
	var errs []string
	if sutErr != nil {
		errs = append(errs, "remove the system under test: "+sutErr.Error())
	}
	if topicErr != nil {
		errs = append(errs, "delete the topics: "+topicErr.Error())
	}
	done, _, err := p.store.Mutate(ctx, key, func(rec *state.Record) (bool, error) {
		t := rec.Teardown
		if t == nil || rec.State == state.TornDown {
			return false, nil
		}
		t.SUTRemoved = t.SUTRemoved || sutErr == nil
		t.TopicsRemoved = t.TopicsRemoved || topicErr == nil
		if crashed && !t.Crashed && t.From == state.Running {
			t.Crashed, t.CrashReason = true, crashReason
		}
		t.Owner, t.OwnerProc, t.LastError = "", nil, strings.Join(errs, "; ")
		if t.SUTRemoved && t.TopicsRemoved {
			rec.State = state.TornDown
			res := result(*rec, p.now())
			rec.Result = &res
			return true, nil
		}
		t.NextMs = p.now().Add(p.backoff(t.Attempts)).UnixMilli()
		return true, nil
	})
	if err != nil {
		p.logger.Warn("record a teardown attempt failed; it is tried again", zap.String("run_id", r.RunID), zap.Error(err))
		return
	}
	p.observe(r.Backend, "teardown", start)
	t := done.Rec.Teardown
	if done.Rec.State == state.TornDown {
		p.attempts.WithLabelValues(r.Backend, "done").Inc()
		p.provisioned.WithLabelValues(r.Backend, "teardown", "ok").Inc()
		p.logger.Info("run torn down", zap.String("run_id", r.RunID), zap.String("cause", t.Cause), zap.Int("attempts", t.Attempts),
			zap.Bool("crashed", t.Crashed), zap.Bool("lost", t.Lost))
		if t.Report {
			if err := p.bus.Publish(ctx, *done.Rec.Result, "torn-down:"+r.RunID); err != nil {
				p.logger.Error("publish torn down failed", zap.String("run_id", r.RunID), zap.Error(err))
			}
		}
		return
	}
	p.attempts.WithLabelValues(r.Backend, "incomplete").Inc()
	next := time.UnixMilli(t.NextMs).Sub(p.now()).Round(time.Second)
	p.logger.Warn("teardown not finished; trying again", zap.String("run_id", r.RunID), zap.Int("attempt", t.Attempts),
		zap.Duration("next_in", next), zap.String("cause", t.LastError))
	if t.Report {
		res := result(done.Rec, p.now())
		res.Incomplete = true
		res.Reason = joinReason(res.Reason, fmt.Sprintf("teardown not finished after attempt %d (next in %s): %s", t.Attempts, next, t.LastError))
		if err := p.bus.Publish(ctx, res, "torn-down-incomplete:"+r.RunID+":"+strconv.Itoa(t.Attempts)); err != nil {
			p.logger.Error("publish incomplete teardown failed", zap.String("run_id", r.RunID), zap.Error(err))
		}
	}
}

// result is the report of a run's teardown.
func result(r state.Record, now time.Time) events.RunTornDown {
	res := events.RunTornDown{ExperimentID: r.ExperimentID, RunID: r.RunID, TsMs: now.UnixMilli()}
	if t := r.Teardown; t != nil {
		res.Crashed, res.Lost = t.Crashed, t.Lost
		if t.Crashed {
			res.Reason = t.CrashReason
		}
		if t.Lost {
			res.Reason = joinReason(res.Reason, t.LostReason)
		}
	}
	return res
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
