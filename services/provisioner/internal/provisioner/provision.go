package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// noder is a backend whose runs belong to one node (local).
type noder interface{ Node() string }

// provision deploys a run. Its record is created first — the lock: only
// the instance that created it (or took it over from an instance whose
// lease ran out) starts anything — and says how the provision ended, so a
// redelivered command gets the same answer.
func (p *Provisioner) provision(ctx context.Context, m *events.RunProvision) error {
	be, ok := p.backends[m.SUT.Backend]
	if !ok {
		return p.publishProvisionFailed(ctx, m, fmt.Sprintf("backend %q is not enabled in this provisioner", m.SUT.Backend), false)
	}
	defer p.observe(m.SUT.Backend, "provision", p.clock.Now())
	key := be.Key(m.RunID)
	if e, err := p.claim(ctx, be, key, m); err != nil || e == nil {
		return err
	}
	hctx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	p.workers.Go(func() { p.renewLease(hctx, key) })

	targets, err := p.deploy(ctx, be, m)
	stopLease()
	if err == nil {
		_, changed, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
			if r.Teardown != nil || r.State != state.Starting {
				return false, nil
			}
			r.State, r.Targets, r.Owner, r.LeaseUntilMs, r.OwnerProc = state.Running, targets, "", 0, nil
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("record run %s as running: %w", m.RunID, err)
		}
		if !changed {
			p.releaseLease(ctx, key)
			p.logger.Info("run provisioned, but its teardown was asked for meanwhile; not reported as provisioned", zap.String("run_id", m.RunID))
			return nil
		}
		p.provisioned.WithLabelValues(m.SUT.Backend, "provision", "ok").Inc()
		return p.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.SUT.Backend,
			Targets: targets, TsMs: p.clock.Now().UnixMilli()}, "provisioned:"+m.RunID)
	}
	if ctx.Err() != nil {
		// Shutting down mid-way: not a failure of the run. The lease is
		// given back, and whoever gets the redelivered command carries on
		// (applying is idempotent; a started process is adopted).
		p.releaseLease(context.WithoutCancel(ctx), key)
		return fmt.Errorf("provision of run %s interrupted: %w", m.RunID, err)
	}
	transient := isTransient(err)
	// What was created is removed by the reconciler, retried until gone.
	if _, _, merr := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		r.ProvisionFailed, r.Transient, r.Owner, r.LeaseUntilMs, r.OwnerProc = err.Error(), transient, "", 0, nil
		if r.Teardown == nil {
			r.Teardown = &state.Teardown{RequestedMs: p.clock.Now().UnixMilli(), Cause: "provision failed", From: r.State}
		}
		r.State = state.Stopping
		return true, nil
	}); merr != nil {
		return fmt.Errorf("record the failed provision of run %s: %w", m.RunID, merr)
	}
	p.poke()
	p.provisioned.WithLabelValues(m.SUT.Backend, "provision", "failed").Inc()
	p.logger.Warn("provision failed", zap.String("run_id", m.RunID), zap.Bool("transient", transient), zap.Error(err))
	return p.publishProvisionFailed(ctx, m, err.Error(), transient)
}

// claim creates the run's record, or takes it over, and returns it held by
// this instance; nil when the command is answered already (from the record).
func (p *Provisioner) claim(ctx context.Context, be Backend, key string, m *events.RunProvision) (*state.Entry, error) {
	rec := state.Record{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.SUT.Backend, State: state.Starting,
		Owner: p.cfg.Instance, LeaseUntilMs: p.clock.Now().Add(p.cfg.Lease).UnixMilli(), OwnerProc: p.selfProc(), Kafka: &m.Kafka}
	if n, ok := be.(noder); ok {
		rec.Node = n.Node()
	}
	for {
		e, created, err := p.store.Create(ctx, key, rec)
		if err != nil {
			return nil, err
		}
		if created {
			return &e, nil
		}
		r := e.Rec
		now := p.clock.Now().UnixMilli()
		switch {
		case r.ProvisionFailed != "":
			return nil, p.publishProvisionFailed(ctx, m, r.ProvisionFailed, r.Transient)
		case (r.Teardown != nil || r.State == state.Stopping || r.State == state.TornDown) && len(r.Targets) > 0:
			// Provisioned (and reported) before, torn down since: a late
			// redelivery has nothing to say.
			p.logger.Info("provision of a run already torn down; ignored", zap.String("run_id", m.RunID))
			return nil, nil
		case r.Teardown != nil || r.State == state.Stopping || r.State == state.TornDown:
			cause := "a teardown"
			if r.Teardown != nil {
				cause = r.Teardown.Cause
			}
			return nil, p.publishProvisionFailed(ctx, m, fmt.Sprintf("run %s was torn down (%s) before it was provisioned", m.RunID, cause), false)
		case r.State == state.Running:
			// Provisioned before (a redelivery, or a re-send after the
			// answer was lost): the record's answer is repeated and the
			// live deployment is left alone. Deploying it again would
			// re-apply its objects (and drop a kube run's readiness
			// baseline, so restarts during the run would go unseen), and
			// a failure of that would delete a running SUT. A crash
			// since is the liveness watch's to report.
			p.logger.Info("provision of a running run repeated; answered from its record", zap.String("run_id", m.RunID))
			return nil, p.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: m.SUT.Backend,
				Targets: r.Targets, TsMs: now}, "provisioned:"+m.RunID)
		case p.heldElsewhere(r, now):
			// Another instance is at it: wait for its answer, or for its
			// lease to run out (it died) and take over — at once when it
			// was a process of this machine that is gone.
			if !poll.Sleep(ctx, p.clock, time.Second) {
				return nil, ctx.Err()
			}
			continue
		}
		taken, changed, err := p.takeOver(ctx, key, rec.Node, m.RunID)
		if err != nil {
			return nil, err
		}
		if changed {
			return &taken, nil
		}
	}
}

// heldElsewhere reports a record another instance holds: its lease runs
// and it is not a process of this machine that is gone.
func (p *Provisioner) heldElsewhere(r state.Record, nowMs int64) bool {
	return r.Owner != p.cfg.Instance && r.LeaseUntilMs > nowMs && !p.holderGone(r.Owner, r.OwnerProc)
}

// takeOver holds a starting run's record for this instance on node, unless
// a teardown came or another instance holds it (changed false).
func (p *Provisioner) takeOver(ctx context.Context, key, node, runID string) (state.Entry, bool, error) {
	return p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		if r.State != state.Starting || r.Teardown != nil || p.heldElsewhere(*r, p.clock.Now().UnixMilli()) {
			return false, nil
		}
		if r.Owner != p.cfg.Instance {
			p.logger.Info("taking over a provision whose instance stopped renewing it", zap.String("run_id", runID),
				zap.String("owner", r.Owner), zap.String("node", r.Node))
		}
		if r.Node != node {
			// Started on another node by an instance that died: it runs
			// here now; what it left there is a leftover of that node.
			r.Node, r.Process = node, nil
		}
		r.Owner, r.LeaseUntilMs, r.OwnerProc = p.cfg.Instance, p.clock.Now().Add(p.cfg.Lease).UnixMilli(), p.selfProc()
		return true, nil
	})
}

// deploy creates the run's topics and its system under test.
func (p *Provisioner) deploy(ctx context.Context, be Backend, m *events.RunProvision) ([]events.Target, error) {
	tm, managed, err := topicManager(be)
	if err != nil {
		return nil, err
	}
	if managed {
		err = tm.CreateTopics(ctx, *m)
	} else {
		err = p.createTopics(ctx, m)
	}
	if err != nil {
		return nil, err
	}
	return be.Provision(ctx, *m)
}

// renewLease keeps the provision's hold on its record until ctx ends.
func (p *Provisioner) renewLease(ctx context.Context, key string) {
	service.Every(ctx, p.clock, p.cfg.Lease/3, nil, func() {
		if _, _, err := p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
			if r.Owner != p.cfg.Instance || r.LeaseUntilMs == 0 {
				return false, nil
			}
			r.LeaseUntilMs = p.clock.Now().Add(p.cfg.Lease).UnixMilli()
			return true, nil
		}); err != nil && ctx.Err() == nil {
			p.logger.Warn("renew provision lease failed", zap.String("key", key), zap.Error(err))
		}
	})
}

func (p *Provisioner) releaseLease(ctx context.Context, key string) {
	_, _, _ = p.store.Mutate(ctx, key, func(r *state.Record) (bool, error) {
		if r.Owner != p.cfg.Instance {
			return false, nil
		}
		r.Owner, r.LeaseUntilMs, r.OwnerProc = "", 0, nil
		return true, nil
	})
}

// selfProc is this process's incarnation, recorded with what it holds.
func (p *Provisioner) selfProc() *procfs.Incarnation {
	inc := p.self
	return &inc
}

// holderGone reports an owner (of a provision or a teardown attempt) that
// was another process of this machine and is gone: what it held may be
// taken over at once rather than when its lease ends.
func (p *Provisioner) holderGone(owner string, inc *procfs.Incarnation) bool {
	return owner != "" && owner != p.cfg.Instance && inc != nil && procfs.Default.Gone(p.self, *inc)
}

// publishProvisionFailed reports a failed provision.
func (p *Provisioner) publishProvisionFailed(ctx context.Context, m *events.RunProvision, reason string, transient bool) error {
	return p.bus.Publish(ctx, events.RunProvisionFailed{ExperimentID: m.ExperimentID, RunID: m.RunID, Reason: reason, Transient: transient,
		TsMs: p.clock.Now().UnixMilli()}, "provision-failed:"+m.RunID)
}

// isTransient reports a failure caused by infrastructure that is down
// (a broker or API server unreachable or overloaded), which retrying the
// run later may get past.
func isTransient(err error) bool {
	var t interface{ Transient() bool }
	return errors.As(err, &t) && t.Transient()
}
