package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// view is the reconciler's copy of the records it looks after, kept
// current by a KV watch; every change it decides on is a revision-checked
// write, so a stale view costs a retry, never a wrong write.
type view struct {
	records map[string]state.Entry
	finals  map[string]finalEntry // by run id
}

type finalEntry struct {
	key string
	rev uint64
	f   state.Final
}

func newView() *view {
	return &view{records: map[string]state.Entry{}, finals: map[string]finalEntry{}}
}

// apply takes one update of the watch; gone is the run of a record that
// was deleted (no longer to be watched).
func (v *view) apply(u jetstream.KeyValueEntry) (gone string) {
	key := u.Key()
	deleted := u.Operation() != jetstream.KeyValuePut
	if strings.HasPrefix(key, state.PrefixFinal) {
		var f state.Final
		if deleted || json.Unmarshal(u.Value(), &f) != nil {
			for run, fe := range v.finals {
				if fe.key == key {
					delete(v.finals, run)
				}
			}
			return ""
		}
		v.finals[f.RunID] = finalEntry{key: key, rev: u.Revision(), f: f}
		return ""
	}
	if deleted {
		if e, ok := v.records[key]; ok {
			delete(v.records, key)
			return e.Rec.RunID
		}
		return ""
	}
	e := state.Entry{Key: key, Rev: u.Revision()}
	if json.Unmarshal(u.Value(), &e.Rec) != nil {
		return ""
	}
	v.records[key] = e
	return ""
}

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

// reconcile runs the reconciler on the record watch w until ctx ends. The
// watch is the bus's: it goes on across NATS restarts, and after one that
// lost the bucket it delivers a delete for every record that vanished.
func (p *Provisioner) reconcile(ctx context.Context, w jetstream.KeyWatcher) error {
	defer func() { _ = w.Stop() }()
	var sweeping sync.Mutex
	v := newView()
	ready := false
	tick := time.NewTicker(p.cfg.Tick)
	defer tick.Stop()
	var nextSweep time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("provisioner record watch ended")
			}
			if u == nil {
				ready = true
				p.mu.Lock()
				p.synced = true
				p.mu.Unlock()
				break
			}
			if u.Key() == state.KeyPlatform {
				if u.Operation() != jetstream.KeyValuePut {
					p.goOnce(state.KeyPlatform, func() { p.restorePlatform(ctx) })
				}
				continue
			}
			if run := v.apply(u); run != "" {
				p.unwatch(run)
			}
			if !ready {
				continue
			}
		case <-p.kick:
		case <-tick.C:
		}
		if !ready {
			continue
		}
		p.pass(ctx, v)
		if now := p.now(); now.After(nextSweep) && sweeping.TryLock() {
			nextSweep = now.Add(p.cfg.ReconcileEvery)
			snap := v.copy()
			p.workers.Add(1)
			go func() {
				defer p.workers.Done()
				defer sweeping.Unlock()
				p.sweep(ctx, snap)
			}()
		}
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

func (v *view) copy() *view {
	c := newView()
	for k, e := range v.records {
		c.records[k] = e
	}
	for k, f := range v.finals {
		c.finals[k] = f
	}
	return c
}

// pass looks at every record: running runs are watched for crashes, runs
// the scheduler has ended get their teardown wanted, and wanted teardowns
// that are due are attempted.
func (p *Provisioner) pass(ctx context.Context, v *view) {
	now := p.now().UnixMilli()
	for key, e := range v.records {
		r := e.Rec
		be, ok := p.backends[r.Backend]
		if !ok || !be.Owns(r) {
			continue
		}
		if w, ok := be.(Watcher); ok {
			if r.State == state.Running {
				w.Watch(e)
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
	p.workers.Add(1)
	go func() {
		defer p.workers.Done()
		defer func() {
			p.mu.Lock()
			delete(p.inflight, key)
			p.mu.Unlock()
			p.poke()
		}()
		fn()
	}()
}

func (p *Provisioner) unwatch(runID string) {
	for _, be := range p.backends {
		if w, ok := be.(Watcher); ok {
			w.Unwatch(runID)
		}
	}
}

// sweep removes what belongs to runs that are over or unknown — marked
// processes on this node, labelled namespaces in the cluster, and their
// topics — and purges records kept long enough. What it removes it logs
// with the run id and counts.
func (p *Provisioner) sweep(ctx context.Context, v *view) {
	platform := p.store.Platform()
	seen := map[Backend]bool{}
	for name, be := range p.backends {
		sw, ok := be.(Sweeper)
		if !ok || seen[be] {
			continue
		}
		seen[be] = true
		lefts, err := sw.Leftovers(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Warn("look for leftovers failed", zap.String("backend", name), zap.Error(err))
			}
			continue
		}
		node := ""
		if n, ok := be.(noder); ok {
			node = n.Node()
		}
		for _, l := range lefts {
			if l.Terminating {
				continue
			}
			e, hasRecord := v.records[be.Key(l.RunID)]
			// Processes here of a run whose record says another node: its
			// provision was taken over there after this node's
			// provisioner died mid-way. Nobody wants them.
			hasRecord = hasRecord && (node == "" || e.Rec.Node == node)
			_, final := v.finals[l.RunID]
			ours := l.Platform == platform
			var why string
			switch {
			case hasRecord && e.Rec.State == state.TornDown && ours:
				why = "torn_down"
			case hasRecord:
				continue // its record is being looked after
			case final && (ours || l.Platform == ""):
				why = "final"
			case ours && p.now().Sub(l.Since) > p.cfg.UnknownGrace:
				why = "unknown"
			default:
				continue
			}
			p.removeLeftover(ctx, name, be, l, why)
		}
	}
	p.purge(ctx, v)
}

func (p *Provisioner) removeLeftover(ctx context.Context, name string, be Backend, l state.Leftover, why string) {
	log := p.logger.With(zap.String("run_id", l.RunID), zap.String("experiment_id", l.ExperimentID), zap.String("why", why))
	if _, _, err := be.Remove(ctx, l.RunID, nil); err != nil {
		log.Warn("remove leftover failed; tried again at the next sweep", zap.String("what", l.What), zap.Error(err))
		return
	}
	p.removed.WithLabelValues(name, l.Kind, why).Inc()
	log.Info("leftover removed", zap.String("kind", l.Kind), zap.String("what", l.What))
	if l.Kafka == nil && !managesTopics(be) {
		return
	}
	if err := p.removeTopics(ctx, be, l.RunID, l.Kafka); err != nil {
		log.Warn("remove a leftover's topics failed; tried again at the next sweep", zap.Error(err))
		return
	}
	p.removed.WithLabelValues(name, "topics", why).Inc()
	what := "topics"
	if l.Kafka != nil {
		what = l.Kafka.InputTopic + ", " + l.Kafka.OutputTopic
	}
	log.Info("leftover topics removed", zap.String("topics", what))
}

func managesTopics(be Backend) bool {
	_, managed, err := topicManager(be)
	return err == nil && managed
}

// purge deletes torn-down records and final-run marks older than the
// tombstone TTL (and a local run's files with its record).
func (p *Provisioner) purge(ctx context.Context, v *view) {
	cutoff := p.now().Add(-p.cfg.TombstoneTTL).UnixMilli()
	for key, e := range v.records {
		if e.Rec.State != state.TornDown || e.Rec.UpdatedMs > cutoff {
			continue
		}
		if err := p.store.Delete(ctx, key, e.Rev); err != nil {
			continue // changed meanwhile, or unreachable: next sweep
		}
		if be, ok := p.backends[e.Rec.Backend]; ok {
			if f, ok := be.(Forgetter); ok {
				f.Forget(e.Rec)
			}
		}
	}
	for _, f := range v.finals {
		if f.f.AtMs < cutoff {
			_ = p.store.Delete(ctx, f.key, f.rev)
		}
	}
}
