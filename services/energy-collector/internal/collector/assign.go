package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// assignments are the targets of the runs being measured, as collect.assign
// announced them and collect.release withdrew them. Safe for concurrent use.
type assignments struct {
	mu   sync.RWMutex
	runs map[string]events.CollectAssign // by run id

	syncOnce sync.Once
	synced   chan struct{}
	// changes is closed and replaced whenever the runs change, so runners
	// re-plan their sampling at once.
	changes chan struct{}
}

func newAssignments() *assignments {
	return &assignments{runs: map[string]events.CollectAssign{}, synced: make(chan struct{}), changes: make(chan struct{})}
}

// changed returns a channel closed at the next change of the runs.
func (a *assignments) changed() <-chan struct{} {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.changes
}

// notifyLocked wakes those waiting on changed.
func (a *assignments) notifyLocked() {
	close(a.changes)
	a.changes = make(chan struct{})
}

// markSynced records that the assignments kept in KV are loaded.
func (a *assignments) markSynced() { a.syncOnce.Do(func() { close(a.synced) }) }

// isSynced reports whether the assignments kept in KV are loaded: a
// restarted collector must not attribute its first interval, which may
// cover its downtime, before it knows the targets.
func (a *assignments) isSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

func (a *assignments) put(m events.CollectAssign) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.runs[m.RunID] = m
	a.notifyLocked()
}

func (a *assignments) delete(runID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.runs, runID)
	a.notifyLocked()
}

// deleteKey removes the run whose KV key is key.
func (a *assignments) deleteKey(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.runs {
		if runKey(id) == key {
			delete(a.runs, id)
		}
	}
	a.notifyLocked()
}

// byKey returns the run whose KV key is key.
func (a *assignments) byKey(key string) (events.CollectAssign, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for id, m := range a.runs {
		if runKey(id) == key {
			return m, true
		}
	}
	return events.CollectAssign{}, false
}

// forNode returns the targets on node, each target id once, sorted by id.
func (a *assignments) forNode(node string) []events.Target {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []events.Target
	seen := map[string]bool{}
	for _, m := range a.runs {
		for _, t := range m.Targets {
			if t.Node == node && !seen[t.ID] {
				seen[t.ID] = true
				out = append(out, t)
			}
		}
	}
	slices.SortFunc(out, func(x, y events.Target) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// active returns the runs being measured, sorted by run id.
func (a *assignments) active() []events.CollectAssign {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]events.CollectAssign, 0, len(a.runs))
	for _, m := range a.runs {
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y events.CollectAssign) int { return strings.Compare(x.RunID, y.RunID) })
	return out
}

// handler consumes collect.assign and collect.release: the runs being
// measured, kept in memory for the runners and in the KV bucket for a
// restarted or another instance.
func (c *Collector) handler() bus.Handler {
	return bus.Router("collector", bus.On(c.assignRun), bus.On(c.releaseRun))
}

func (c *Collector) assignRun(ctx context.Context, m *events.CollectAssign) error {
	b, err := json.Marshal(m)
	if err != nil {
		return bus.Permanent(fmt.Errorf("encode assignment of run %s: %w", m.RunID, err))
	}
	c.runKeys.Lock()
	defer c.runKeys.Unlock()
	c.assign.put(*m)
	if _, err := c.kv.Put(ctx, runKey(m.RunID), b); err != nil {
		return fmt.Errorf("record assignment of run %s: %w", m.RunID, err)
	}
	c.logger.Info("targets assigned", zap.String("run_id", m.RunID), zap.Int("targets", len(m.Targets)))
	return nil
}

func (c *Collector) releaseRun(ctx context.Context, m *events.CollectRelease) error {
	c.runKeys.Lock()
	defer c.runKeys.Unlock()
	c.assign.delete(m.RunID)
	if err := c.kv.Delete(ctx, runKey(m.RunID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove assignment of run %s: %w", m.RunID, err)
	}
	c.logger.Info("targets released", zap.String("run_id", m.RunID))
	return nil
}
