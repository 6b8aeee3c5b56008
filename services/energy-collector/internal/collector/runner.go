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
)

// errLost means another instance took the source over.
var errLost = errors.New("source claimed by another instance")

// committer records a runner's progress where another instance can take it
// over (the source's claim in KV). commit stores state as the claim's value
// if the claim is still this runner's; ok false with a nil error means it
// was not stored and the runner should retry next interval; errLost means
// the claim moved on.
type committer interface {
	commit(ctx context.Context, state []byte) (ok bool, err error)
}

// runner samples one source every interval and turns each reading into
// sample rows: node, zones, one row per target with energy, and the
// unattributed rest. A shared source's runner commits its state to the
// source's claim before it emits the rows, so the rows of an interval exist
// only if the next owner starts after that interval.
type runner struct {
	c      *Collector
	sc     SourceConfig
	logger *zap.Logger
	claim  committer // nil for pinned sources

	src      energy.Source
	pending  []byte             // hand-over state to restore once the source is open
	cum      map[string]float64 // cumulative joules per series
	lastTsMs int64
	lastRows []byte // last committed state

	// A shared runner holds its rows until the next commit, every
	// CommitInterval: a commit per interval and source would cost more
	// KV traffic than the sampling itself.
	uncommitted []store.Sample
	keep        map[string]bool // workloads whose state the next commit carries
	lastCommit  time.Time

	healthy *bool
	reason  string
}

// runnerState is what a shared runner commits: the source's checkpoint and
// the cumulative energy of its series, so the next owner continues both.
type runnerState struct {
	TsMs   int64              `json:"ts_ms"`
	Source json.RawMessage    `json:"source,omitempty"`
	Cum    map[string]float64 `json:"cum,omitempty"`
}

func newRunner(c *Collector, sc SourceConfig, claim committer, handover []byte) *runner {
	return &runner{c: c, sc: sc, claim: claim, pending: handover, cum: map[string]float64{},
		logger: c.logger.With(zap.String("source", sc.ID), zap.String("node", sc.Node))}
}

// run samples until ctx ends (nil, after committing what it holds) or the
// claim is lost (errLost).
func (r *runner) run(ctx context.Context) error {
	t := time.NewTicker(r.c.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.tick(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if r.claim != nil && len(r.uncommitted) > 0 {
				return r.commit(ctx)
			}
			return nil
		case <-t.C:
		}
	}
}

// state returns the last committed state, for a release: a runner whose
// source never opened passes on the state it was handed.
func (r *runner) state() []byte {
	if r.lastRows == nil {
		return r.pending
	}
	return r.lastRows
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
	r.logger.Info("source opened", zap.String("meter", why), zap.Bool("shared", r.claim != nil))
	if r.pending != nil {
		r.restore(r.pending)
		r.pending = nil
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
		r.src, r.cum, r.lastRows = src, map[string]float64{}, nil
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
	r.lastRows = data
	return true
}

// tick takes one reading.
func (r *runner) tick(ctx context.Context) error {
	if !r.open() {
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
	r.uncommitted = append(r.uncommitted, rows...)
	r.keep = keep
	if r.lastRows != nil && time.Since(r.lastCommit) < r.c.cfg.CommitInterval {
		return nil
	}
	return r.commit(ctx)
}

// commit records the source's state in its claim and then releases the
// rows held since the previous commit. If the commit fails they are
// dropped and the source returns to the committed state, whose next reading
// covers them again — here, or at the next owner after a take-over.
func (r *runner) commit(ctx context.Context) error {
	rows := r.uncommitted
	r.uncommitted = nil
	state, err := r.checkpoint(time.UnixMilli(r.lastTsMs), r.cum, r.keep)
	if err != nil {
		r.logger.Warn("checkpoint failed", zap.Error(err))
		r.rollback()
		return nil
	}
	ok, err := r.claim.commit(ctx, state)
	if err != nil {
		return err
	}
	if !ok {
		r.rollback()
		return nil
	}
	r.lastRows, r.lastCommit = state, time.Now()
	r.c.writer.AddSamples(rows)
	return nil
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

// rollback returns the source to the last committed state: the reading that
// could not be committed will be covered by the next one.
func (r *runner) rollback() {
	if r.lastRows == nil {
		r.src, r.cum = nil, map[string]float64{} // nothing committed yet: reopen for a fresh baseline
		return
	}
	r.restore(r.lastRows)
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
