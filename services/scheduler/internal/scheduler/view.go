package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/events"
)

// view is a local, eventually consistent copy of the KV bucket, kept by a
// watch. It answers the tick loop's and the API's questions without
// reading KV; every decision it prompts is re-checked inside a
// revision-checked update.
type view struct {
	mu    sync.RWMutex
	exps  map[string]versioned[ExperimentRecord] // by id
	runs  map[string]versioned[RunRecord]        // by id
	trigs map[string]versioned[TriggerRecord]    // by name
	slotm map[string]versioned[SlotSet]          // by cluster
	// ended indexes the final experiments the sweep (sweep.go) has to look
	// at: each is marked when its final record arrives and when a run of it
	// arrives unfinished, with the mark's number, and dropped once the sweep
	// found nothing to do since that mark. So a finished experiment costs
	// the sweep one look at its runs, not one per tick.
	ended  map[string]uint64
	marks  uint64
	synced atomic.Bool
}

func newView() *view {
	return &view{exps: map[string]versioned[ExperimentRecord]{}, runs: map[string]versioned[RunRecord]{},
		trigs: map[string]versioned[TriggerRecord]{}, slotm: map[string]versioned[SlotSet]{}, ended: map[string]uint64{}}
}

// load starts watching the bucket and applies its current values; it
// returns once they are loaded (the view is synced), with the watcher for
// follow. The watch lives on ctx.
func (v *view) load(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch scheduler state: %w", err)
	}
	if err := v.follow(ctx, w, true); err != nil {
		_ = w.Stop()
		return nil, err
	}
	return w, nil
}

// follow applies the watcher's updates until ctx ends or, with initial,
// until the bucket's current values are loaded.
func (v *view) follow(ctx context.Context, w jetstream.KeyWatcher, initial bool) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch of the state bucket ended")
			}
			if e == nil { // the current values are loaded
				v.synced.Store(true)
				if initial {
					return nil
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				v.remove(e.Key())
				continue
			}
			if err := v.apply(e.Key(), e.Revision(), e.Value()); err != nil {
				return err
			}
		}
	}
}

// isSynced reports whether the bucket's values have been loaded.
func (v *view) isSynced() bool { return v.synced.Load() }

// apply decodes one key's value into the view.
func (v *view) apply(key string, rev uint64, data []byte) error {
	switch {
	case strings.HasPrefix(key, "exp."):
		return decodeInto(key, rev, data, v.putExperiment)
	case strings.HasPrefix(key, "run."):
		return decodeInto(key, rev, data, v.putRun)
	case strings.HasPrefix(key, "trigger."):
		return decodeInto(key, rev, data, v.putTrigger)
	case strings.HasPrefix(key, "slots."):
		return decodeInto(key, rev, data, func(set versioned[SlotSet]) {
			set.Value.Cluster, _ = slotClusterOfKey(key)
			v.putSlots(set)
		})
	}
	return nil
}

// decodeInto decodes a record and hands it to put.
func decodeInto[T any](key string, rev uint64, data []byte, put func(versioned[T])) error {
	var x T
	if err := json.Unmarshal(data, &x); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	put(versioned[T]{x, rev})
	return nil
}

func (v *view) remove(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.exps, strings.TrimPrefix(key, "exp."))
	delete(v.ended, strings.TrimPrefix(key, "exp."))
	delete(v.runs, strings.TrimPrefix(key, "run."))
	delete(v.trigs, strings.TrimPrefix(key, "trigger."))
	if c, ok := slotClusterOfKey(key); ok {
		delete(v.slotm, c)
	}
}

// putNewer keeps the newer (by revision) of m[key] and x (v.mu held);
// true when x replaced what was there.
func putNewer[T any](m map[string]versioned[T], key string, x versioned[T]) bool {
	if cur, ok := m[key]; !ok || cur.Revision < x.Revision {
		m[key] = x
		return true
	}
	return false
}

// put is putNewer under v.mu.
func put[T any](v *view, m map[string]versioned[T], key string, x versioned[T]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	putNewer(m, key, x)
}

// get returns m[key] without its revision.
func get[T any](v *view, m map[string]versioned[T], key string) (T, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	x, ok := m[key]
	return x.Value, ok
}

// values returns m's values, in no particular order.
func values[T any](v *view, m map[string]versioned[T]) []T {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]T, 0, len(m))
	for _, x := range m {
		out = append(out, x.Value)
	}
	return out
}

// putExperiment keeps an experiment's newer record; a final one is marked
// for the sweep.
func (v *view) putExperiment(e versioned[ExperimentRecord]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if putNewer(v.exps, e.Value.ID, e) && events.ExperimentFinal(e.Value.State) {
		v.markEnded(e.Value.ID)
	}
}

// putRun keeps a run's newer record; an unfinished run of a final
// experiment marks the experiment for the sweep (e.g. a run a tick started
// as the experiment was being cancelled).
func (v *view) putRun(r versioned[RunRecord]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !putNewer(v.runs, r.Value.RunID, r) || events.RunFinal(r.Value.State) {
		return
	}
	if e, ok := v.exps[r.Value.ExperimentID]; ok && events.ExperimentFinal(e.Value.State) {
		v.markEnded(e.Value.ID)
	}
}

func (v *view) putTrigger(t versioned[TriggerRecord]) { put(v, v.trigs, t.Value.Name, t) }
func (v *view) putSlots(s versioned[SlotSet])         { put(v, v.slotm, s.Value.Cluster, s) }

// markEnded marks a final experiment for the sweep (v.mu held).
func (v *view) markEnded(id string) {
	v.marks++
	v.ended[id] = v.marks
}

// endedMarks returns the marked experiments with their marks.
func (v *view) endedMarks() map[string]uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return maps.Clone(v.ended)
}

// swept drops an experiment's mark unless it was marked again after mark.
func (v *view) swept(id string, mark uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ended[id] == mark {
		delete(v.ended, id)
	}
}

// unfinished returns the experiment's runs that the view does not show
// final — ones it does not know yet included (another scheduler's, the
// watch behind) — started ones first, each part in the experiment's order.
func (v *view) unfinished(e ExperimentRecord) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var started, pending []string
	for _, id := range e.RunIDs {
		r, ok := v.runs[id]
		switch {
		case ok && events.RunFinal(r.Value.State):
		case ok && r.Value.State == events.RunStatePending:
			pending = append(pending, id)
		default:
			started = append(started, id)
		}
	}
	return append(started, pending...)
}

func (v *view) experiment(id string) (ExperimentRecord, bool) { return get(v, v.exps, id) }
func (v *view) run(id string) (RunRecord, bool)               { return get(v, v.runs, id) }

// slots returns a cluster's slot set as last seen.
func (v *view) slots(cluster string) (SlotSet, bool) { return get(v, v.slotm, cluster) }

// versionedRun returns a run with its revision.
func (v *view) versionedRun(id string) (versioned[RunRecord], bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.runs[id]
	return r, ok
}

// experiments returns every experiment, in no particular order.
func (v *view) experiments() []ExperimentRecord { return values(v, v.exps) }

// active returns unfinished experiments, oldest first.
func (v *view) active() []ExperimentRecord {
	out := slices.DeleteFunc(v.experiments(), func(e ExperimentRecord) bool { return events.ExperimentFinal(e.State) })
	slices.SortFunc(out, func(a, b ExperimentRecord) int {
		return cmp.Or(cmp.Compare(a.CreatedMs, b.CreatedMs), strings.Compare(a.ID, b.ID))
	})
	return out
}

// queued returns the pending experiments whose spec waits for the
// expander (submission.go), oldest first.
func (v *view) queued() []string {
	v.mu.RLock()
	var out []ExperimentRecord
	for _, e := range v.exps {
		if e.Value.Pending && e.Value.Spec != "" {
			out = append(out, e.Value)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b ExperimentRecord) int {
		return cmp.Or(cmp.Compare(a.CreatedMs, b.CreatedMs), strings.Compare(a.ID, b.ID))
	})
	ids := make([]string, len(out))
	for i, e := range out {
		ids[i] = e.ID
	}
	return ids
}

// triggerList returns the armed triggers by name.
func (v *view) triggerList() []TriggerRecord {
	out := values(v, v.trigs)
	slices.SortFunc(out, func(a, b TriggerRecord) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// triggerSubjects returns the distinct subjects of armed subject triggers.
func (v *view) triggerSubjects() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range v.triggerList() {
		// One armed before the rule existed is not waited for: the
		// declarer never captures it (events.CheckTriggerSubject).
		if t.Subject != "" && !seen[t.Subject] && events.CheckTriggerSubject(t.Subject) == nil {
			seen[t.Subject] = true
			out = append(out, t.Subject)
		}
	}
	return out
}

// tally counts an experiment's runs by outcome: cancelled runs are not
// failures, and are counted apart.
type tally struct {
	done, failed, cancelled int
	started                 int // runs that have left pending (final ones included)
}

// final is how many runs have ended.
func (t tally) final() int { return t.done + t.failed + t.cancelled }

// counts tallies an experiment's runs. A failed run whose retry is due but
// not yet created counts as in flight, so the experiment does not finish
// in between.
func (v *view) counts(e ExperimentRecord, retries int) tally {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var t tally
	for _, id := range e.RunIDs {
		r := v.runs[id].Value
		switch r.State {
		case events.RunStateDone:
			t.done++
		case events.RunStateFailed:
			if !r.retryDue(retries) {
				t.failed++
			}
		case events.RunStateCancelled:
			t.cancelled++
		case events.RunStatePending, "":
			continue
		}
		t.started++
	}
	return t
}
