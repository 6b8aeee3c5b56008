package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

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
	// guard, when set, is asked after each reading whether it may be
	// stored (a pinned source's node lock); an error ends the runner.
	guard func() error

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

	// Per-run meters (meters.go): the interval sampled at now, the node's
	// model profile (local sources; nil until read, or when the node's
	// facts cannot be read), and the configurations recorded per run.
	interval time.Duration
	profile  *energy.ModelProfile
	recorded map[string]string
	cal      *calibrator // a metered local node's fit (calibrate.go)
	// holeFromMs, when > 0, is where the measured data ended before this
	// runner started from a new baseline; the baseline reading records the
	// stretch up to it as a gap (fresh_baseline) with holeDetail.
	holeFromMs int64
	holeDetail string
}

// hole records that the data before the next baseline ended at fromMs.
func (r *runner) hole(fromMs int64, detail string) {
	if fromMs > r.holeFromMs {
		r.holeFromMs, r.holeDetail = fromMs, detail
	}
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
	changed := r.c.assign.changed()
	r.interval = r.c.assign.plan(r.sc.Node, r.c.cfg.Interval).interval
	t := r.c.clock.NewTicker(r.interval)
	defer func() { t.Stop() }()
	if err := r.tick(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return r.finish(ctx)
		case <-t.C():
			if err := r.tick(ctx); err != nil {
				return err
			}
		case <-changed:
			// The runs on the node changed: a reading now closes the
			// current interval (never longer than the old one), and the
			// next ones come at the interval the runs ask.
			changed = r.c.assign.changed()
			if iv := r.c.assign.plan(r.sc.Node, r.c.cfg.Interval).interval; iv != r.interval {
				r.logger.Info("sampling interval changed", zap.Duration("from", r.interval), zap.Duration("to", iv))
				t.Stop()
				if err := r.tick(ctx); err != nil {
					return err
				}
				r.interval, t = iv, r.c.clock.NewTicker(iv)
			}
		case <-r.commitWait():
			if err := r.maybeCommit(ctx, false); err != nil {
				return err
			}
		}
	}
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
	age := r.c.clock.Since(time.UnixMilli(st.TsMs))
	if age > r.c.cfg.MaxCheckpointAge {
		r.logger.Info("hand-over state too old; starting from a baseline", zap.Duration("age", age))
		r.hole(st.TsMs, fmt.Sprintf("checkpoint %s old (more than %s): restarted from a baseline", age.Round(time.Millisecond), r.c.cfg.MaxCheckpointAge))
		return false
	}
	cp, ok := r.src.(energy.Checkpointer)
	if !ok || len(st.Source) == 0 {
		r.hole(st.TsMs, "checkpoint without source state: restarted from a baseline")
		return false
	}
	if err := cp.Restore(st.Source); err != nil {
		r.logger.Warn("hand-over state rejected; starting from a baseline", zap.Error(err))
		r.hole(st.TsMs, "checkpoint rejected ("+err.Error()+"): restarted from a baseline")
		return false
	}
	r.cum = st.Cum
	if r.cum == nil {
		r.cum = map[string]float64{}
	}
	r.lastTsMs = st.TsMs
	return true
}

// stretched reports a sample interval the analyzer calls stretched (over
// twice the asked interval and a second more): the meter went unread.
func stretched(got, asked time.Duration) bool {
	return asked > 0 && got > max(2*asked, asked+time.Second)
}

// tick takes one reading.
func (r *runner) tick(ctx context.Context) error {
	if !r.c.assign.isSynced() || !r.open() {
		return nil
	}
	now := time.UnixMilli(r.c.clock.Now().UnixMilli()) // whole ms: interval_ms is then exactly ts_ms − previous ts_ms
	if now.UnixMilli() <= r.lastTsMs {
		return nil // a previous owner's clock ran ahead of ours; wait for it
	}
	plan := r.c.assign.plan(r.sc.Node, r.c.cfg.Interval)
	profile := r.applyModel(ctx, plan)
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
	if r.guard != nil {
		if err := r.guard(); err != nil {
			return err
		}
	}
	if m.Resets > 0 {
		r.c.m.resets.WithLabelValues(r.sc.ID).Add(float64(m.Resets))
	}
	r.flagImplausible(m)
	if m.Interval == 0 && r.holeFromMs > 0 && now.UnixMilli() > r.holeFromMs {
		r.c.records.addGap(store.Gap{Node: r.sc.Node, Source: r.sc.ID, FromMs: r.holeFromMs, ToMs: now.UnixMilli(),
			Reason: store.GapFreshBaseline, Detail: r.holeDetail, Collector: r.c.cfg.Instance}, 0)
		r.holeFromMs, r.holeDetail = 0, ""
	}
	if m.Interval > 0 && stretched(m.Interval, plan.interval) {
		// Resumed after an outage or a stall: the sample spans it. It keeps
		// the energy; the row says where the resolution went.
		r.c.records.addGap(store.Gap{Node: r.sc.Node, Source: r.sc.ID, FromMs: now.Add(-m.Interval).UnixMilli(), ToMs: now.UnixMilli(),
			Samples: uint64(m.Interval/plan.interval) - 1, Reason: store.GapOutage,
			Detail: fmt.Sprintf("one sample spans %s where %s was asked: the meter went unread (the collector was down or stalled)",
				m.Interval.Round(time.Millisecond), plan.interval), Collector: r.c.cfg.Instance}, 0)
	}
	if m.Interval > 0 {
		r.recordRunMeters(plan, m, profile)
		r.calibrate(ctx, m)
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

// applyModel sets the model the plan asks on a source that estimates with
// one, before its reading: the interval that reading closes is estimated
// with it. It returns the profile applied, or nil when the source
// measures.
func (r *runner) applyModel(ctx context.Context, p meterPlan) *energy.ModelProfile {
	md, ok := r.src.(energy.Modelled)
	if !ok || md.ModelMeter() == nil {
		return nil
	}
	if r.profile == nil {
		base, err := localProfile(r.sc)
		if err != nil {
			r.logger.Warn("node facts unreadable; the model keeps its watts", zap.Error(err))
			return nil
		}
		r.profile = &base
	}
	eff := applyModel(r.c.fixedProfile(ctx, r.sc.ID, *r.profile, p.runs), p.model)
	if err := md.ModelMeter().SetModel(eff.IdleWatts(), eff.MaxWatts()); err != nil {
		r.logger.Warn("model refused; the previous one stays", zap.Error(err))
	}
	return &eff
}

// flagImplausible counts a reading's implausible counter increases and
// records the interval they were dropped from as a gap (reason
// implausible), where the analyzer finds it for the runs it touches.
func (r *runner) flagImplausible(m energy.Measurement) {
	if len(m.Implausible) == 0 {
		return
	}
	r.c.m.implaus.WithLabelValues(r.sc.ID).Add(float64(len(m.Implausible)))
	from := r.lastTsMs
	if m.Interval > 0 {
		from = m.Time.Add(-m.Interval).UnixMilli()
	}
	details := make([]string, len(m.Implausible))
	for i, imp := range m.Implausible {
		details[i] = imp.String()
	}
	r.logger.Warn("implausible counter increase not counted", zap.Strings("zones", details))
	r.c.records.addGap(store.Gap{Node: r.sc.Node, Source: r.sc.ID, FromMs: from, ToMs: m.Time.UnixMilli(), Samples: 1,
		Reason: store.GapImplausible, Detail: strings.Join(details, "; "), Collector: r.c.cfg.Instance}, 0)
}
