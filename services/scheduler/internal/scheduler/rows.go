package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// persistRun queues the run row for ClickHouse, versioned by its KV
// revision so that the newest state wins whichever write lands last.
func (s *Scheduler) persistRun(vr versioned[RunRecord]) {
	s.rows.add(runRow(vr))
}

// storeFinalRows writes every run row of a finished experiment from the
// local view, which holds each run's newest state even when the goroutine
// that made a transition has not queued its row yet: readers told that an
// experiment finished find all its runs stored. A failure is logged and
// returned.
func (s *Scheduler) storeFinalRows(ctx context.Context, e ExperimentRecord) error {
	rows := make([]store.Run, 0, len(e.RunIDs))
	for _, id := range e.RunIDs {
		if vr, ok := s.view.versionedRun(id); ok {
			rows = append(rows, runRow(vr))
		}
	}
	if err := s.store.UpsertRuns(ctx, rows); err != nil {
		s.logger.Warn("store final run rows failed", zap.String("experiment_id", e.ID), zap.Error(err))
		return fmt.Errorf("store experiment %s's final run rows: %w", e.ID, err)
	}
	return nil
}

// runRow is a run's row in ClickHouse.
func runRow(vr versioned[RunRecord]) store.Run {
	r := &vr.Value
	cfg, _ := json.Marshal(r.Config)
	factors, _ := json.Marshal(r.Factors)
	phases, _ := json.Marshal(r.Phases)
	mp, _ := r.Phase(events.RunStateMeasuring)
	return store.Run{ExperimentID: r.ExperimentID, RunID: r.RunID, Index: uint32(r.Index), Repetition: uint32(r.Repetition),
		Config: string(cfg), ConfigHash: r.ConfigHash, Factors: string(factors), State: r.State, Reason: r.Reason, Phases: string(phases),
		MeasureStartMs: mp.StartMs, MeasureEndMs: mp.EndMs, CreatedMs: r.CreatedMs, Version: vr.Revision}
}

// rowWriter stores run rows in ClickHouse off the transition path, in
// batches. Rows carry their KV revision as version, so the order in which
// batches land does not matter: the newest state wins.
type rowWriter struct {
	store  Store
	logger *zap.Logger
	clock  clock.WithTicker
	mu     sync.Mutex
	rows   []store.Run
	kick   chan struct{}
	// writing serialises flushes: a flush returns only once rows taken by
	// an earlier, concurrent flush have landed too.
	writing sync.Mutex
}

const maxPendingRows = 100_000

func newRowWriter(st Store, logger *zap.Logger, clk clock.WithTicker) *rowWriter {
	return &rowWriter{store: st, logger: logger, clock: clk, kick: make(chan struct{}, 1)}
}

func (w *rowWriter) add(r store.Run) {
	w.mu.Lock()
	if len(w.rows) < maxPendingRows {
		w.rows = append(w.rows, r)
	} else {
		w.logger.Warn("run rows backlog full; dropping a row (the next transition writes it again)", zap.String("run_id", r.RunID))
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// flush writes what is pending; on failure the rows stay queued.
func (w *rowWriter) flush(ctx context.Context) error {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	rows := w.rows
	w.rows = nil
	w.mu.Unlock()
	if len(rows) == 0 {
		return nil
	}
	if err := w.store.UpsertRuns(ctx, rows); err != nil {
		w.mu.Lock()
		w.rows = append(rows, w.rows...)
		w.mu.Unlock()
		return err
	}
	return nil
}

// run flushes shortly after rows arrive until ctx ends, then once more.
func (w *rowWriter) run(ctx context.Context) error {
	t := w.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := w.flush(fctx); err != nil {
				w.logger.Warn("final run rows flush failed", zap.Error(err))
			}
			cancel()
			return nil
		case <-w.kick:
		case <-t.C():
		}
		if err := w.flush(ctx); err != nil && ctx.Err() == nil {
			w.logger.Warn("store run rows failed; retrying", zap.Error(err))
		}
	}
}
