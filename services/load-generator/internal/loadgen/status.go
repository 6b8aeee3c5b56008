package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// A share's checkpoint (status, in plan.go) lives in the runs bucket under
// status.<run>.<instance>: written every CheckpointInterval and when the
// share ends, read when it resumes and by the leader.

// readStatus reads this instance's checkpoint of run, retrying while NATS
// does not answer: starting from zero instead would lose the count.
func (g *Generator) readStatus(ctx context.Context, run, instance string) (status, bool, error) {
	for {
		e, err := g.runs.Get(ctx, statusKey(run, instance))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return status{}, false, nil
		}
		if err == nil {
			var st status
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return status{}, false, fmt.Errorf("decode checkpoint of run %s: %w", run, err)
			}
			return st, true, nil
		}
		g.logger.Warn("read load checkpoint failed; retrying", zap.String("run_id", run), zap.Error(err))
		select {
		case <-ctx.Done():
			return status{}, false, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// putStatus writes a checkpoint taken now.
func (g *Generator) putStatus(st status, run string) bool {
	st.UpdatedMs = g.clock.Now().UnixMilli()
	return g.writeStatus(st, run)
}

// writeStatus writes a checkpoint as it is, and reports whether it was
// stored.
func (g *Generator) writeStatus(st status, run string) bool {
	b, _ := json.Marshal(st)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := g.runs.Put(ctx, statusKey(run, st.Instance), b); err != nil {
		g.logger.Warn("write load status failed", zap.String("run_id", run), zap.Error(err))
		return false
	}
	return true
}
