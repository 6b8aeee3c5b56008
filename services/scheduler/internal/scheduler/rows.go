package scheduler

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/store"
)

// rowWriter stores run rows in ClickHouse off the transition path, in
// batches. Rows carry their KV revision as version, so the order in which
// batches land does not matter: the newest state wins.
type rowWriter struct {
	store  Store
	logger *zap.Logger
	mu     sync.Mutex
	rows   []store.Run
	kick   chan struct{}
	// writing serialises flushes: a flush returns only once rows taken by
	// an earlier, concurrent flush have landed too.
	writing sync.Mutex
}

const maxPendingRows = 100_000

func newRowWriter(st Store, logger *zap.Logger) *rowWriter {
	return &rowWriter{store: st, logger: logger, kick: make(chan struct{}, 1)}
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
func (w *rowWriter) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := w.flush(fctx); err != nil {
				w.logger.Warn("final run rows flush failed", zap.Error(err))
			}
			cancel()
			return
		case <-w.kick:
		case <-t.C:
		}
		if err := w.flush(ctx); err != nil && ctx.Err() == nil {
			w.logger.Warn("store run rows failed; retrying", zap.Error(err))
		}
	}
}
