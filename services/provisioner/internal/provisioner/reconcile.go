package provisioner

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// filters are the records this instance looks after: local runs (those
// of its node are its to watch and stop), cluster runs when it has the
// cluster, final-run marks, and the platform id (recorded again when the
// bucket lost it).
func (p *Provisioner) filters() []string {
	out := []string{state.PrefixFinal + ">", state.KeyPlatform}
	for _, be := range p.backends {
		switch be.(type) {
		case noder:
			out = append(out, state.PrefixLocal+">")
		case Sweeper:
			out = append(out, state.PrefixKube+">")
		}
	}
	return out
}

// reconcile runs the reconciler on the record watch Init opened, until
// ctx ends. The watch is the bus's: it goes on across NATS restarts, and
// after one that lost the bucket it delivers a delete for every record that
// vanished.
//
// A pass looks at every record, so record updates are coalesced: the
// updates waiting are taken together, and while they keep coming they
// bring on at most one pass per tick (the tick's own pass covers the rest,
// within a tick). A burst — a restart loading every record, many runs
// ending at once — costs a few passes, not one per update; a lone update
// is still acted on at once. A kick (work of this instance finished, a
// run marked final) passes at once.
func (p *Provisioner) reconcile(ctx context.Context) error {
	var sweeping sync.Mutex
	tick := p.clock.NewTicker(p.cfg.Tick)
	defer tick.Stop()
	var nextSweep, lastPass time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-p.watch.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("provisioner record watch ended")
			}
			p.takeWaiting(ctx, u)
			if p.clock.Since(lastPass) < p.cfg.Tick {
				continue // the next tick's pass sees it
			}
		case <-p.kick:
		case <-tick.C():
		}
		lastPass = p.clock.Now()
		p.passes.Inc()
		p.pass(ctx, p.view)
		if now := p.clock.Now(); now.After(nextSweep) && sweeping.TryLock() {
			nextSweep = now.Add(p.cfg.ReconcileEvery)
			snap := p.view.copy()
			p.workers.Go(func() {
				defer sweeping.Unlock()
				p.sweep(ctx, snap)
			})
		}
	}
}

// takeWaiting takes u and every update of the record watch already
// waiting behind it.
func (p *Provisioner) takeWaiting(ctx context.Context, u jetstream.KeyValueEntry) {
	for {
		if u != nil {
			p.take(ctx, p.view, u)
		}
		select {
		case next, ok := <-p.watch.Updates():
			if !ok {
				return // reconcile sees the end of the watch next
			}
			u = next
		default:
			return
		}
	}
}

// take applies one update of the record watch to v: a record that is gone
// is no longer watched, and a platform id that is gone is recorded again.
func (p *Provisioner) take(ctx context.Context, v *view, u jetstream.KeyValueEntry) {
	p.updates.Inc()
	if u.Key() == state.KeyPlatform {
		if u.Operation() != jetstream.KeyValuePut {
			p.goOnce(state.KeyPlatform, func() { p.restorePlatform(ctx) })
		}
		return
	}
	if run := v.apply(u); run != "" {
		p.unwatch(run)
	}
}

// restorePlatform records the platform id again once the bucket lost it.
func (p *Provisioner) restorePlatform(ctx context.Context) {
	if err := p.store.RestorePlatform(ctx); err != nil {
		if ctx.Err() == nil {
			p.logger.Error("record the platform id again failed; a provisioner started now would take another", zap.Error(err))
		}
		return
	}
	p.logger.Warn("the platform id was lost with the record bucket and is recorded again", zap.String("platform", p.store.Platform()))
}

// pass looks at every record: running runs are watched for crashes, runs
// the scheduler has ended get their teardown wanted, and wanted teardowns
// that are due are attempted.
func (p *Provisioner) pass(ctx context.Context, v *view) {
	now := p.clock.Now().UnixMilli()
	for key, e := range v.records {
		r := e.Rec
		be, ok := p.backends[r.Backend]
		if !ok || !be.Owns(r) {
			continue
		}
		if w, ok := be.(Watcher); ok {
			if r.State == state.Running {
				w.Watch(e, func(reason string) { p.crashed(e, reason) })
			} else {
				w.Unwatch(r.RunID)
			}
		}
		if f, ok := v.finals[r.RunID]; ok && r.Teardown == nil && (r.State == state.Running || r.State == state.Starting) {
			p.goOnce("final:"+key, func() {
				if _, err := p.requestTeardown(ctx, key, "run "+f.f.State, false, nil); err != nil && ctx.Err() == nil {
					p.logger.Warn("record the teardown of a run that is over failed", zap.String("key", key), zap.Error(err))
				}
			})
			continue
		}
		if !p.attemptDue(r, time.UnixMilli(now)) {
			continue
		}
		p.goOnce(key, func() { p.attempt(ctx, key) })
	}
}

// goOnce runs fn in a goroutine unless one for the same key still runs.
func (p *Provisioner) goOnce(key string, fn func()) {
	p.mu.Lock()
	busy := p.inflight[key]
	p.inflight[key] = true
	p.mu.Unlock()
	if busy {
		return
	}
	p.workers.Go(func() {
		defer func() {
			p.mu.Lock()
			delete(p.inflight, key)
			p.mu.Unlock()
			p.poke()
		}()
		fn()
	})
}

func (p *Provisioner) unwatch(runID string) {
	for _, be := range p.backends {
		if w, ok := be.(Watcher); ok {
			w.Unwatch(runID)
		}
	}
}
