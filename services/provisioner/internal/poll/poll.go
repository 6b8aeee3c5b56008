// Package poll holds what the provisioner's polling loops share: waiting
// out an interval unless the context ends, and one liveness watch per run
// (both backends poll their runs — /proc for processes, the API server for
// pods — rather than subscribe, so that a run adopted after a restart is
// watched the same way as one started here).
package poll

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Sleep waits d on clk, or until ctx ends; it reports whether the wait
// ran its course (false: ctx ended).
func Sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// Watches runs at most one watch goroutine per run, each with a value it
// may be told again (the run's latest record); safe for concurrent use.
// A watch that returns on its own (it reported a crash, or found nothing
// to watch) is forgotten, so the run is watched again if it is asked for
// again.
type Watches[T any] struct {
	mu     sync.Mutex
	runs   map[string]*watch[T]
	wg     sync.WaitGroup
	closed bool
}

type watch[T any] struct {
	cancel context.CancelFunc
	value  T
}

// Start runs fn for runID in a goroutine of its own until Stop or Close,
// unless the run is watched already — then only its value is replaced —
// or the set is closed. It reports whether it started a watch.
func (w *Watches[T]) Start(runID string, v T, fn func(ctx context.Context, v T)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.runs[runID]; ok || w.closed {
		if ok {
			cur.value = v
		}
		return false
	}
	if w.runs == nil {
		w.runs = map[string]*watch[T]{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	me := &watch[T]{cancel: cancel, value: v}
	w.runs[runID] = me
	w.wg.Go(func() {
		defer cancel()
		fn(ctx, v)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.runs[runID] == me {
			delete(w.runs, runID)
		}
	})
	return true
}

// Stop ends the watch of runID, if any, without waiting for it.
func (w *Watches[T]) Stop(runID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.runs[runID]; ok {
		cur.cancel()
		delete(w.runs, runID)
	}
}

// Runs lists the runs being watched.
func (w *Watches[T]) Runs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.runs))
	for id := range w.runs {
		out = append(out, id)
	}
	return out
}

// Close ends every watch, waits until all have returned (a crash being
// reported is reported before Close returns) and returns the values of
// the runs that were watched. Start does nothing afterwards.
func (w *Watches[T]) Close() []T {
	w.mu.Lock()
	w.closed = true
	out := make([]T, 0, len(w.runs))
	for id, cur := range w.runs {
		cur.cancel()
		out = append(out, cur.value)
		delete(w.runs, id)
	}
	w.mu.Unlock()
	w.wg.Wait()
	return out
}
