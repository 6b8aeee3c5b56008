package provisioner

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

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
	claimed, ok := p.claimTeardown(ctx, key)
	if !ok {
		return
	}
	r := claimed.Rec
	start := p.clock.Now()
	out := p.removeAll(ctx, claimed)
	if ctx.Err() != nil {
		return // shutting down: the lease runs out and any instance carries on
	}
	done, _, err := p.store.Mutate(ctx, key, func(rec *state.Record) (bool, error) { return p.recordAttempt(rec, out), nil })
	if err != nil {
		p.logger.Warn("record a teardown attempt failed; it is tried again", zap.String("run_id", r.RunID), zap.Error(err))
		return
	}
	p.observe(r.Backend, "teardown", start)
	p.reportAttempt(ctx, done.Rec)
}

// claimTeardown holds the record's due teardown for this instance, if this
// instance can do it.
func (p *Provisioner) claimTeardown(ctx context.Context, key string) (state.Entry, bool) {
	claimed, ok, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		now := p.clock.Now()
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
	if err != nil && ctx.Err() == nil {
		p.logger.Warn("claim a teardown failed", zap.String("key", key), zap.Error(err))
	}
	return claimed, err == nil && ok
}

// outcome is what an attempt achieved.
type outcome struct {
	sutErr, topicErr error
	crashed          bool
	crashReason      string
}

// removeAll removes what of the claimed run is left: its SUT and its
// topics, each whatever became of the other.
func (p *Provisioner) removeAll(ctx context.Context, claimed state.Entry) outcome {
	r := claimed.Rec
	be := p.backends[r.Backend]
	var out outcome
	if !r.Teardown.SUTRemoved {
		out.crashed, out.crashReason, out.sutErr = be.Remove(ctx, r.RunID, &claimed)
	}
	if !r.Teardown.TopicsRemoved {
		out.topicErr = p.removeTopics(ctx, be, r.RunID, r.Kafka)
	}
	return out
}

// recordAttempt writes out into the record: torn down with its result when
// nothing is left, else the next attempt after a back-off. It reports
// whether the record changed.
func (p *Provisioner) recordAttempt(rec *state.Record, out outcome) bool {
	t := rec.Teardown
	if t == nil || rec.State == state.TornDown {
		return false
	}
	var errs []string
	if out.sutErr != nil {
		errs = append(errs, "remove the system under test: "+out.sutErr.Error())
	}
	if out.topicErr != nil {
		errs = append(errs, "delete the topics: "+out.topicErr.Error())
	}
	t.SUTRemoved = t.SUTRemoved || out.sutErr == nil
	t.TopicsRemoved = t.TopicsRemoved || out.topicErr == nil
	if out.crashed && !t.Crashed && t.From == state.Running {
		t.Crashed, t.CrashReason = true, out.crashReason
	}
	t.Owner, t.OwnerProc, t.LastError = "", nil, strings.Join(errs, "; ")
	if t.SUTRemoved && t.TopicsRemoved {
		rec.State = state.TornDown
		res := result(*rec, p.clock.Now())
		rec.Result = &res
		return true
	}
	t.NextMs = p.clock.Now().Add(p.backoff(t.Attempts)).UnixMilli()
	return true
}

// reportAttempt counts and logs the recorded attempt and, when the
// teardown is to be reported, publishes its outcome.
func (p *Provisioner) reportAttempt(ctx context.Context, rec state.Record) {
	t := rec.Teardown
	if rec.State == state.TornDown {
		p.attempts.WithLabelValues(rec.Backend, "done").Inc()
		p.provisioned.WithLabelValues(rec.Backend, "teardown", "ok").Inc()
		p.logger.Info("run torn down", zap.String("run_id", rec.RunID), zap.String("cause", t.Cause), zap.Int("attempts", t.Attempts),
			zap.Bool("crashed", t.Crashed), zap.Bool("lost", t.Lost))
		if t.Report {
			if err := p.bus.Publish(ctx, *rec.Result, "torn-down:"+rec.RunID); err != nil {
				p.logger.Error("publish torn down failed", zap.String("run_id", rec.RunID), zap.Error(err))
			}
		}
		return
	}
	p.attempts.WithLabelValues(rec.Backend, "incomplete").Inc()
	next := time.UnixMilli(t.NextMs).Sub(p.clock.Now()).Round(time.Second)
	p.logger.Warn("teardown not finished; trying again", zap.String("run_id", rec.RunID), zap.Int("attempt", t.Attempts),
		zap.Duration("next_in", next), zap.String("cause", t.LastError))
	if t.Report {
		res := result(rec, p.clock.Now())
		res.Incomplete = true
		res.Reason = joinReason(res.Reason, fmt.Sprintf("teardown not finished after attempt %d (next in %s): %s", t.Attempts, next, t.LastError))
		if err := p.bus.Publish(ctx, res, "torn-down-incomplete:"+rec.RunID+":"+strconv.Itoa(t.Attempts)); err != nil {
			p.logger.Error("publish incomplete teardown failed", zap.String("run_id", rec.RunID), zap.Error(err))
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
