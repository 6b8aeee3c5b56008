package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/events"
)

// SlotSet is the set of runs holding one target cluster's concurrency
// slots, shared by every scheduler through the state bucket (key
// "slots.<cluster>", revision-checked writes). A run takes a slot when it
// leaves pending and gives it back when it is final; a slot whose holder is
// final or gone (its release was lost in a crash) is reclaimed by the next
// scheduler that needs one. So however many schedulers run, a cluster never
// has more than Concurrency runs between provisioning and their end.
type SlotSet struct {
	Cluster string   `json:"cluster"`
	Runs    []string `json:"runs"`
}

func slotKey(cluster string) string { return "slots." + cluster }

// clusterOf names the target cluster a run's system under test is deployed
// on: its backend. The provisioner has one cluster per backend (the local
// machine, or the one Kubernetes cluster it is configured for), so runs of
// one backend share nodes and must not overlap beyond the limit.
func clusterOf(r RunRecord) string {
	if b := r.Config.SUT.Backend; b != "" {
		return b
	}
	return "local"
}

// slotsFull reports, from the local view, whether cluster's slots are all
// held by runs the view knows and shows unfinished: a cheap check that
// spares the tick a KV round trip; the revision-checked take has the last
// word (and reclaims holders the view does not know if they are gone).
func (s *Scheduler) slotsFull(cluster string) bool {
	set, ok := s.view.slots(cluster)
	if !ok {
		return false
	}
	live := 0
	for _, id := range set.Runs {
		if r, ok := s.view.run(id); ok && !events.RunFinal(r.State) {
			live++
		}
	}
	return live >= s.cfg.Concurrency
}

// takeSlot gives runID one of its cluster's slots, reclaiming those of
// final or deleted runs; false when every slot is held by a live run.
// Taking a slot the run holds already succeeds (a crash between the take
// and the run's transition).
func (s *Scheduler) takeSlot(ctx context.Context, cluster, runID string) (bool, error) {
	key := slotKey(cluster)
	for attempt := 0; attempt < 20; attempt++ {
		taken := false
		vs, _, err := update(ctx, s.kv, key, func(set *SlotSet) (bool, error) {
			taken = false // fn runs again after a revision conflict
			if slices.Contains(set.Runs, runID) {
				taken = true
				return false, nil
			}
			live, err := s.liveHolders(ctx, set.Runs)
			if err != nil {
				return false, err
			}
			changed := len(live) != len(set.Runs)
			set.Runs = live
			if len(live) < s.cfg.Concurrency {
				set.Runs = append(set.Runs, runID)
				slices.Sort(set.Runs)
				taken, changed = true, true
			}
			return changed, nil
		})
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// The cluster's first run: create the set (or lose the race and
			// go round again).
			if s.cfg.Concurrency < 1 {
				return false, nil
			}
			rev, cerr := s.kv.create(ctx, key, SlotSet{Cluster: cluster, Runs: []string{runID}})
			if errors.Is(cerr, jetstream.ErrKeyExists) {
				continue
			}
			if cerr != nil {
				return false, fmt.Errorf("create slots of cluster %s: %w", cluster, cerr)
			}
			s.view.putSlots(versioned[SlotSet]{SlotSet{Cluster: cluster, Runs: []string{runID}}, rev})
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("take a slot of cluster %s for run %s: %w", cluster, runID, err)
		}
		vs.Value.Cluster = cluster
		s.view.putSlots(vs)
		return taken, nil
	}
	return false, fmt.Errorf("take a slot of cluster %s for run %s: %w", cluster, runID, errConflict)
}

// liveHolders keeps the holders that are not final. The view decides for
// runs it shows final (a final state never changes); a holder the view does
// not know is read from the bucket, since the view may lag behind another
// scheduler's writes: only a holder whose key is gone is dropped.
func (s *Scheduler) liveHolders(ctx context.Context, holders []string) ([]string, error) {
	live := make([]string, 0, len(holders))
	for _, id := range holders {
		r, ok := s.view.run(id)
		if !ok {
			var cur RunRecord
			_, err := s.kv.get(ctx, runKey(id), &cur)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				continue
			case err != nil:
				return nil, fmt.Errorf("read slot holder %s: %w", id, err)
			}
			r = cur
		}
		if !events.RunFinal(r.State) {
			live = append(live, id)
		}
	}
	return live, nil
}

// releaseSlot gives back a final run's slot. A release lost in a crash is
// made good by liveHolders when the slot is next needed.
func (s *Scheduler) releaseSlot(ctx context.Context, r RunRecord) error {
	cluster := clusterOf(r)
	vs, changed, err := update(ctx, s.kv, slotKey(cluster), func(set *SlotSet) (bool, error) {
		i := slices.Index(set.Runs, r.RunID)
		if i < 0 {
			return false, nil
		}
		set.Runs = slices.Delete(set.Runs, i, i+1)
		return true, nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release the slot of run %s on cluster %s: %w", r.RunID, cluster, err)
	}
	if changed {
		vs.Value.Cluster = cluster
		s.view.putSlots(vs)
	}
	return nil
}

// slotClusterOfKey returns the cluster of a "slots.<cluster>" key.
func slotClusterOfKey(key string) (string, bool) { return strings.CutPrefix(key, "slots.") }
