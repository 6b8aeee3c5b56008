package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

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

// runner samples one source every interval and turns each reading into
// sample rows: node, zones, one row per target with energy, and the
// unattributed rest.
//
// With a committer, rows never reach the writer before the commit that
// covers them, and a commit is made only once the previous commit's rows
// are durable (a sink.Ticket): so at every instant each interval up to the
// last commit is either durable or carried by that commit, and whoever
// continues from the commit — a new owner after a crash, or this collector
// restarted — first writes the carried rows again (harmless if they were
// already stored: samples de-duplicate by key) and then reads on from the
// committed state. Its first interval starts exactly where the last stored
// row ended: a kill -9 at any instant loses nothing and counts nothing
// twice. Readings wait in windows until their commit; while commits cannot
// be made (ClickHouse down without a spool, NATS down) they pile up, and
// past maxPendingRows the runner drops them and returns to the last
// committed state, so its next reading covers the whole stretch in one
// interval — coarser, never a hole.
type runner struct {
	c      *Collector
	sc     SourceConfig
	logger *zap.Logger
	claim  committer // nil: rows go straight to the writer (a pinned source without a spool)

	src      energy.Source
	start    handover           // restored once the source is open
	cum      map[string]float64 // cumulative joules per series
	lastTsMs int64

	committed  []byte // state of the last commit
	lastCommit time.Time

	// The rows of the last commit until they are known durable; the next
	// commit waits for them.
	held       []store.Sample
	heldRows   []byte
	heldTicket *sink.Ticket

	pending     []window
	pendingRows int

	healthy *bool
	reason  string
}

// runnerState is what a runner commits: the source's checkpoint and the
// cumulative energy of its series, so the next owner continues both.
type runnerState struct {
	TsMs   int64              `json:"ts_ms"`
	Source json.RawMessage    `json:"source,omitempty"`
	Cum    map[string]float64 `json:"cum,omitempty"`
}

func newRunner(c *Collector, sc SourceConfig, claim committer, start handover) *runner {
	return &runner{c: c, sc: sc, claim: claim, start: start, committed: start.state, cum: map[string]float64{},
		logger: c.logger.With(zap.String("source", sc.ID), zap.String("node", sc.Node))}
}

// run samples until ctx ends (nil, after committing what it can within a
// bound) or the claim is lost (errLost).
func (r *runner) run(ctx context.Context) error {
	r.writeHandedOverRows()
	t := time.NewTicker(r.c.cfg.Interval)
	defer t.Stop()
	if err := r.tick(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return r.finish(ctx)
		case <-t.C:
			if err := r.tick(ctx); err != nil {
				return err
			}
		case <-r.commitWait():
			if err := r.maybeCommit(ctx, false); err != nil {
				return err
			}
		}
	}
}

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

func (r *runner) open() bool {
	if r.src != nil {
		return true
	}
	src, why, err := openSource(r.sc, r.c.http)
	if err != nil {
		r.setHealth(false, err)
		return false
	}
	r.src = src
	r.logger.Info("source opened", zap.String("meter", why), zap.Bool("shared", r.claim != nil && !r.sc.Pinned))
	if r.start.state != nil {
		r.restore(r.start.state)
		r.start.state = nil
	}
	return r.src != nil
}

// restore continues from a committed state (a previous owner's, or this
// runner's own on a rollback) when it is recent enough; otherwise the source
// is reopened for a fresh baseline, so it never runs on from a state that
// no commit covers.
func (r *runner) restore(data []byte) {
	if !r.tryRestore(data) {
		src, _, err := openSource(r.sc, r.c.http)
		if err != nil {
			r.src = nil
			return
		}
		r.src, r.cum, r.lastTsMs = src, map[string]float64{}, 0
	}
}

func (r *runner) tryRestore(data []byte) bool {
	var st runnerState
	if err := json.Unmarshal(data, &st); err != nil || st.TsMs <= 0 {
		r.logger.Warn("hand-over state unreadable; starting from a baseline", zap.Error(err))
		return false
	}
	age := time.Since(time.UnixMilli(st.TsMs))
	if age > r.c.cfg.MaxCheckpointAge {
		r.logger.Info("hand-over state too old; starting from a baseline", zap.Duration("age", age))
		return false
	}
	cp, ok := r.src.(energy.Checkpointer)
	if !ok || len(st.Source) == 0 {
		return false
	}
	if err := cp.Restore(st.Source); err != nil {
		r.logger.Warn("hand-over state rejected; starting from a baseline", zap.Error(err))
		return false
	}
	r.cum = st.Cum
	if r.cum == nil {
		r.cum = map[string]float64{}
	}
	r.lastTsMs = st.TsMs
	return true
}

// tick takes one reading.
func (r *runner) tick(ctx context.Context) error {
	if !r.c.assign.isSynced() || !r.open() {
		return nil
	}
	now := time.UnixMilli(time.Now().UnixMilli()) // whole ms: interval_ms is then exactly ts_ms − previous ts_ms
	if now.UnixMilli() <= r.lastTsMs {
		return nil // a previous owner's clock ran ahead of ours; wait for it
	}
	rctx, cancel := context.WithTimeout(ctx, r.c.cfg.SourceTimeout)
	m, err := r.src.Read(rctx, now)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.setHealth(false, err)
		}
		return nil
	}
	r.setHealth(true, nil)
	if m.Resets > 0 {
		r.c.m.resets.WithLabelValues(r.sc.ID).Add(float64(m.Resets))
	}
	targets := r.c.assign.forNode(r.sc.Node)
	rows, cum, keep := r.rows(m, targets)
	r.cum, r.lastTsMs = cum, now.UnixMilli()
	if m.Interval > 0 {
		r.c.m.power.WithLabelValues(r.sc.ID).Set(m.TotalPowerW)
	}
	if r.claim == nil {
		r.c.writer.AddSamples(rows)
		return nil
	}
	state, err := r.checkpoint(now, cum, keep)
	if err != nil {
		r.logger.Warn("checkpoint failed", zap.Error(err))
		r.rollback("checkpoint failed")
		return nil
	}
	if n := len(r.pending); n > 0 && len(r.pending[n-1].rows)+len(rows) <= maxWindowRows {
		r.pending[n-1].rows = append(r.pending[n-1].rows, rows...)
		r.pending[n-1].state = state
	} else {
		r.pending = append(r.pending, window{rows: rows, state: state})
	}
	r.pendingRows += len(rows)
	if r.pendingRows > r.c.maxPendingRows {
		r.rollback("commits blocked")
		return nil
	}
	return r.maybeCommit(ctx, false)
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
	return force || r.committed == nil || len(r.pending) > 1 || time.Since(r.lastCommit) >= r.c.cfg.CommitInterval
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
	r.committed, r.lastCommit = w.state, time.Now()
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
	deadline := time.Now().Add(r.c.cfg.LeaseTTL)
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
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		r.c.writer.FlushSoon()
		select {
		case <-r.heldTicket.Done():
		case <-time.After(min(left, 100*time.Millisecond)):
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

// rows turns a reading into sample rows and the updated cumulative energy.
// keep lists the workloads attributed to a target, whose per-workload state
// a hand-over must carry.
func (r *runner) rows(m energy.Measurement, targets []events.Target) ([]store.Sample, map[string]float64, map[string]bool) {
	cum := make(map[string]float64, len(r.cum))
	keep := map[string]bool{}
	if m.Interval <= 0 {
		for k, v := range r.cum {
			cum[k] = v
		}
		return nil, cum, keep
	}
	sels := make([]energy.Selector, 0, len(targets))
	scopes := make(map[string]string, len(targets))
	for _, t := range targets {
		switch {
		case t.Kind == "process" && t.PID > 0:
			sels = append(sels, energy.Selector{ID: t.ID, PID: t.PID})
			scopes[t.ID] = "process"
		case t.Kind == "pod" && (t.ContainerID != "" || t.Pod != ""):
			sels = append(sels, energy.Selector{ID: t.ID, ContainerID: t.ContainerID, Pod: t.Pod, Namespace: t.Namespace})
			scopes[t.ID] = "pod"
		}
	}
	assigned := energy.Assign(sels, m.Workloads)
	for i, si := range assigned {
		if si >= 0 {
			keep[m.Workloads[i].Key] = true
		}
	}
	weights := energy.Weights(sels, m.Workloads, assigned)
	var att energy.Attribution
	switch m.Basis {
	case energy.BasisCPU:
		att = energy.Attribute(m.TotalDeltaJ, m.CPU, weights)
	case energy.BasisJoules:
		att = energy.Split(m.TotalDeltaJ, weights)
	default:
		att = energy.Split(m.TotalDeltaJ, nil)
	}

	nodeID := "node/" + r.sc.Node
	secs := m.Interval.Seconds()
	base := store.Sample{TsMs: m.Time.UnixMilli(), Node: r.sc.Node, Source: m.Source, IntervalMs: uint32(m.Interval.Milliseconds()),
		Estimated: m.Estimated, Collector: r.c.cfg.Instance}
	out := make([]store.Sample, 0, 2+len(m.Zones)+len(att.Parts))
	add := func(scope, target, zone string, deltaJ float64) {
		key := scope + "|" + target + "|" + zone
		cum[key] = r.cum[key] + deltaJ
		s := base
		s.Scope, s.TargetID, s.Zone, s.DeltaJ, s.EnergyJ, s.PowerW = scope, target, zone, deltaJ, cum[key], deltaJ/secs
		out = append(out, s)
	}
	add("node", nodeID, "", m.TotalDeltaJ)
	for _, z := range m.Zones {
		add("zone", nodeID, z.Zone, z.DeltaJ)
	}
	ids := make([]string, 0, len(att.Parts))
	for id := range att.Parts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		add(scopes[id], id, "", att.Parts[id])
	}
	add("unattributed", nodeID, "", att.Unattributed)
	// Keep the running totals of targets still assigned; forget the rest.
	for k, v := range r.cum {
		if _, done := cum[k]; done {
			continue
		}
		scope, rest, _ := strings.Cut(k, "|")
		target, _, _ := strings.Cut(rest, "|")
		if (scope == "process" || scope == "pod") && scopes[target] == "" {
			continue
		}
		cum[k] = v
	}
	return out, cum, keep
}

func (r *runner) setHealth(ok bool, err error) {
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	changed := r.healthy == nil || *r.healthy != ok || (!ok && reason != r.reason)
	r.healthy, r.reason = &ok, reason
	r.c.health.set(r.sc.ID, ok, reason)
	if !changed {
		return
	}
	if ok {
		r.logger.Info("source healthy")
		return
	}
	r.logger.Warn("source unhealthy; sampling the others", zap.String("reason", reason))
}
