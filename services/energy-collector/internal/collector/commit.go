package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/store"
)

// The commit protocol of a runner (see runner): rows wait in windows until
// the commit that covers them, and a commit waits until the previous one's
// rows are durable.

// errLost means another instance took the source over.
var errLost = errors.New("source claimed by another instance")

// committer records a runner's progress where its successor finds it: the
// source's claim in KV (shared sources) or a file in the spool directory
// (pinned ones). commit stores state — the source's checkpoint after the
// last reading of a window — together with that window's rows, atomically:
// whoever continues from state first writes rows again, since they may not
// have reached ClickHouse. ok false with a nil error means nothing was
// stored and the runner retries later; errLost means the source is another
// instance's now.
type committer interface {
	commit(ctx context.Context, state, rows []byte) (ok bool, err error)
}

// handover is what a runner starts from: the last committed state and the
// rows committed with it (nil once they were known durable).
type handover struct {
	state, rows []byte
}

// window is readings not committed yet: their rows and the state after the
// last of them.
type window struct {
	rows  []store.Sample
	state []byte
}

// maxWindowRows bounds the rows one commit carries, so that a claim stays
// well below NATS's message size limit (1 MB by default): about 70 bytes a
// row. One reading is never split, so a reading of more rows makes a
// larger commit.
const maxWindowRows = 4096

// writeHandedOverRows writes the rows the starting commit carries: the
// previous owner may have died before they were durable.
func (r *runner) writeHandedOverRows() {
	rows, err := decodeRows(r.start.rows)
	if err != nil {
		r.logger.Error("rows handed over are unreadable; they are lost", zap.Error(err))
		return
	}
	if len(rows) == 0 {
		return
	}
	r.held, r.heldRows, r.heldTicket = rows, r.start.rows, r.c.writer.AddSamples(rows)
	r.logger.Info("rows handed over written again", zap.Int("rows", len(rows)))
}

// handover is what the next owner starts from: the last committed state,
// and its rows unless they are known durable.
func (r *runner) handover() handover {
	h := handover{state: r.committed}
	if r.heldTicket != nil && !r.heldTicket.Durable() {
		h.rows = r.heldRows
	}
	return h
}

// commitWait is a channel that fires when a due commit may proceed: the
// previous commit's rows became durable (or were lost and must be handed
// over again at the next tick).
func (r *runner) commitWait() <-chan struct{} {
	if len(r.pending) == 0 || r.heldTicket == nil || r.heldTicket.Lost() || !r.due(false) {
		return nil
	}
	return r.heldTicket.Done()
}

// due reports whether the next commit should be made now: the first one at
// once, then every CommitInterval, and back to back while a backlog of
// windows waits.
func (r *runner) due(force bool) bool {
	return force || r.committed == nil || len(r.pending) > 1 || r.c.clock.Since(r.lastCommit) >= r.c.cfg.CommitInterval
}

// heldDurable reports whether the last commit's rows are durable; lost rows
// are handed to the writer again.
func (r *runner) heldDurable() bool {
	if r.heldTicket == nil {
		return true
	}
	if r.heldTicket.Lost() {
		r.heldTicket = r.c.writer.AddSamples(r.held)
		return false
	}
	if !r.heldTicket.Durable() {
		return false
	}
	r.held, r.heldRows, r.heldTicket = nil, nil, nil
	return true
}

// maybeCommit commits the oldest window when due and when the previous
// commit's rows are durable, and then hands its rows to the writer. A
// commit that fails keeps the window for the next attempt.
func (r *runner) maybeCommit(ctx context.Context, force bool) error {
	if len(r.pending) == 0 || !r.due(force) || !r.heldDurable() {
		return nil
	}
	w := r.pending[0]
	enc, err := encodeRows(w.rows)
	if err != nil {
		r.logger.Error("rows cannot be committed", zap.Error(err))
		r.rollback("rows cannot be encoded")
		return nil
	}
	ok, err := r.claim.commit(ctx, w.state, enc)
	if err != nil || !ok {
		return err
	}
	r.committed, r.lastCommit = w.state, r.c.clock.Now()
	r.pending, r.pendingRows = r.pending[1:], r.pendingRows-len(w.rows)
	if len(w.rows) > 0 {
		r.held, r.heldRows, r.heldTicket = w.rows, enc, r.c.writer.AddSamples(w.rows)
		if len(r.pending) > 0 {
			r.c.writer.FlushSoon() // a backlog of windows waits for these rows
		}
	}
	return nil
}

// finish, once the runner is told to stop, commits what it holds and waits
// for the rows to be durable, within LeaseTTL (what a crash would cost the
// next owner anyway); what is left is picked up from the commit.
func (r *runner) finish(ctx context.Context) error {
	if r.claim == nil {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	deadline := r.c.clock.Now().Add(r.c.cfg.LeaseTTL)
	for len(r.pending) > 0 && r.waitHeld(deadline) {
		n := len(r.pending)
		if err := r.maybeCommit(ctx, true); err != nil {
			return err
		}
		if len(r.pending) == n {
			break // the commit failed: the next owner starts from the previous one
		}
	}
	r.waitHeld(deadline)
	return nil
}

// waitHeld waits until the last commit's rows are durable or the deadline
// passes.
func (r *runner) waitHeld(deadline time.Time) bool {
	for !r.heldDurable() {
		left := deadline.Sub(r.c.clock.Now())
		if left <= 0 {
			return false
		}
		r.c.writer.FlushSoon()
		select {
		case <-r.heldTicket.Done():
		case <-r.c.clock.After(min(left, 100*time.Millisecond)):
		}
	}
	return true
}

func (r *runner) checkpoint(now time.Time, cum map[string]float64, keep map[string]bool) ([]byte, error) {
	st := runnerState{TsMs: now.UnixMilli(), Cum: cum}
	if cp, ok := r.src.(energy.Checkpointer); ok {
		b, err := cp.Checkpoint(func(k string) bool { return keep[k] })
		if err != nil {
			return nil, fmt.Errorf("checkpoint source %s: %w", r.sc.ID, err)
		}
		st.Source = b
	}
	return json.Marshal(st)
}

// rollback drops the readings not committed and returns the source to the
// last committed state: the next reading covers them again, in one
// interval.
func (r *runner) rollback(why string) {
	if r.pendingRows > 0 {
		r.logger.Warn("uncommitted readings dropped; the next one covers them", zap.String("reason", why),
			zap.Int("rows", r.pendingRows), zap.Int("windows", len(r.pending)))
		r.c.m.rollbacks.WithLabelValues(r.sc.ID).Inc()
	}
	r.pending, r.pendingRows = nil, 0
	if r.committed == nil {
		r.src, r.cum, r.lastTsMs = nil, map[string]float64{}, 0 // nothing committed yet: reopen for a fresh baseline
		return
	}
	r.restore(r.committed)
}
