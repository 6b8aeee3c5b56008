package provisioner

import (
	"context"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

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
			case ours && p.clock.Now().Sub(l.Since) > p.cfg.UnknownGrace:
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
	cutoff := p.clock.Now().Add(-p.cfg.TombstoneTTL).UnixMilli()
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
