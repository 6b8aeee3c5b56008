package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// view is a local, eventually consistent copy of the KV bucket, kept by a
// watch. It answers the tick loop's questions without reading KV; every
// decision it prompts is re-checked inside a revision-checked update.
type view struct {
	mu     sync.RWMutex
	exps   map[string]versioned[ExperimentRecord]
	runs   map[string]versioned[RunRecord]
	trigs  map[string]versioned[TriggerRecord]
	slotm  map[string]versioned[SlotSet] // by cluster
	synced chan struct{}
}

func newView() *view {
	return &view{exps: map[string]versioned[ExperimentRecord]{}, runs: map[string]versioned[RunRecord]{},
		trigs: map[string]versioned[TriggerRecord]{}, slotm: map[string]versioned[SlotSet]{}, synced: make(chan struct{})}
}

// watch follows the bucket until ctx ends; synced closes once the initial
// values are loaded.
func (v *view) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch scheduler state: %w", err)
	}
	defer func() { _ = w.Stop() }()
	once := sync.Once{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				once.Do(func() { close(v.synced) })
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

func (v *view) apply(key string, rev uint64, data []byte) error {
	switch {
	case strings.HasPrefix(key, "exp."):
		var e ExperimentRecord
		if err := json.Unmarshal(data, &e); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		v.putExperiment(versioned[ExperimentRecord]{e, rev})
	case strings.HasPrefix(key, "run."):
		var r RunRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		v.putRun(versioned[RunRecord]{r, rev})
	case strings.HasPrefix(key, "trigger."):
		var t TriggerRecord
		if err := json.Unmarshal(data, &t); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		v.putTrigger(versioned[TriggerRecord]{t, rev})
	case strings.HasPrefix(key, "slots."):
		var set SlotSet
		if err := json.Unmarshal(data, &set); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		set.Cluster, _ = slotClusterOfKey(key)
		v.putSlots(versioned[SlotSet]{set, rev})
	}
	return nil
}

// putSlots keeps the newer of the cached and the given slot set.
func (v *view) putSlots(s versioned[SlotSet]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.slotm[s.Value.Cluster]; !ok || cur.Revision < s.Revision {
		v.slotm[s.Value.Cluster] = s
	}
}

// slots returns a cluster's slot set as last seen.
func (v *view) slots(cluster string) (SlotSet, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.slotm[cluster]
	return s.Value, ok
}

func (v *view) putTrigger(t versioned[TriggerRecord]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.trigs[t.Value.Name]; !ok || cur.Revision < t.Revision {
		v.trigs[t.Value.Name] = t
	}
}

// triggerList returns the armed triggers by name.
func (v *view) triggerList() []TriggerRecord {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]TriggerRecord, 0, len(v.trigs))
	for _, t := range v.trigs {
		out = append(out, t.Value)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// triggerSubjects returns the distinct subjects of armed subject triggers.
func (v *view) triggerSubjects() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range v.triggerList() {
		if t.Subject != "" && !seen[t.Subject] {
			seen[t.Subject] = true
			out = append(out, t.Subject)
		}
	}
	return out
}

func (v *view) remove(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.exps, strings.TrimPrefix(key, "exp."))
	delete(v.runs, strings.TrimPrefix(key, "run."))
	delete(v.trigs, strings.TrimPrefix(key, "trigger."))
	if c, ok := slotClusterOfKey(key); ok {
		delete(v.slotm, c)
	}
}

// putExperiment keeps the newer of the cached and the given value.
func (v *view) putExperiment(e versioned[ExperimentRecord]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.exps[e.Value.ID]; !ok || cur.Revision < e.Revision {
		v.exps[e.Value.ID] = e
	}
}

// putRun keeps the newer of the cached and the given value.
func (v *view) putRun(r versioned[RunRecord]) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.runs[r.Value.RunID]; !ok || cur.Revision < r.Revision {
		v.runs[r.Value.RunID] = r
	}
}

func (v *view) run(id string) (RunRecord, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.runs[id]
	return r.Value, ok
}

func (v *view) experiment(id string) (ExperimentRecord, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.exps[id]
	return e.Value, ok
}

// active returns unfinished experiments, oldest first.
func (v *view) active() []ExperimentRecord {
	v.mu.RLock()
	out := make([]ExperimentRecord, 0, len(v.exps))
	for _, e := range v.exps {
		if e.Value.State == "queued" || e.Value.State == "running" {
			out = append(out, e.Value)
		}
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedMs != out[j].CreatedMs {
			return out[i].CreatedMs < out[j].CreatedMs
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// counts tallies an experiment's runs. A failed run whose retry is due but
// not yet created counts as in flight, so the experiment does not finish
// in between.
func (v *view) counts(e ExperimentRecord, retries int) (done, failed, started int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, id := range e.RunIDs {
		r := v.runs[id].Value
		switch r.State {
		case StateDone:
			done++
		case StateFailed:
			if !r.retryDue(retries) {
				failed++
			}
		case StateCancelled:
			failed++
		case StatePending, "":
			continue
		}
		started++
	}
	return done, failed, started
}
