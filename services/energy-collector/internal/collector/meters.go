package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// Per-run meter configuration. A run's meters section (interval, local
// meter, model) arrives with its assignment; a node measured for several
// runs at once is sampled by one source, so concurrent runs are reconciled
// by these rules, and every run's effective configuration is recorded
// (run_meters) with a note saying what was applied:
//
//   - Interval: the node is sampled at the finest interval any active run
//     on it asks, and at the collector's own interval when that is finer
//     or no run asks (a v1 assignment). A run thus gets samples at the
//     interval it asked or finer, never coarser; finer samples integrate to
//     the same energy.
//   - Model: when active runs on the node set a model, the one of the
//     lowest run id applies (deterministic on every collector and after a
//     restart); runs whose model differs are told so in their note.
//     Otherwise the node's profile applies: calibrated when a fit exists,
//     the default per-vCPU coefficients otherwise. The calibration is
//     fixed for the run: it is taken when none of the node's active
//     runs was sampled with the current one (a run arriving on an idle
//     node, or after its predecessors ended) and kept while any of them
//     is active; a run joining a running one shares its model, and a
//     newer fit applies to later runs. While runs on a node overlap
//     without a pause, the node keeps its calibration.
//   - Local meter: the collector's configuration decides which meter a
//     node has (a run cannot switch one on); a run asking rapl on a node
//     measured by the model is told so in its note.

// minRunInterval is the finest interval a run may ask of a collector;
// the spec refuses less than 100 ms, this guards older producers.
const minRunInterval = 50 * time.Millisecond

// plannedRun is one active run on a node and what it asked.
type plannedRun struct {
	experimentID, runID string
	asked               *events.CollectMeters // nil: a v1 assignment
}

// meterPlan is how a node is sampled now, given its active runs.
type meterPlan struct {
	interval time.Duration
	// intervalRun is the run whose ask set interval; "" when the
	// collector's own interval is the finest.
	intervalRun string
	model       *events.CollectModel // nil: the node's profile
	modelRun    string               // the run whose model applies
	runs        []plannedRun         // sorted by run id
}

// plan applies the rules above to the runs with a target on node.
func (a *assignments) plan(node string, base time.Duration) meterPlan {
	a.mu.RLock()
	defer a.mu.RUnlock()
	p := meterPlan{interval: base}
	for _, m := range a.runs {
		if !slices.ContainsFunc(m.Targets, func(t events.Target) bool { return t.Node == node }) {
			continue
		}
		p.runs = append(p.runs, plannedRun{experimentID: m.ExperimentID, runID: m.RunID, asked: m.Meters})
	}
	slices.SortFunc(p.runs, func(x, y plannedRun) int { return strings.Compare(x.runID, y.runID) })
	for _, r := range p.runs {
		if r.asked == nil {
			continue
		}
		if iv := max(time.Duration(r.asked.IntervalMs)*time.Millisecond, minRunInterval); r.asked.IntervalMs > 0 && iv < p.interval {
			p.interval, p.intervalRun = iv, r.runID
		}
		if r.asked.Model != nil && p.model == nil {
			p.model, p.modelRun = r.asked.Model, r.runID
		}
	}
	return p
}

// applyModel returns base with a run's model applied: node totals replace
// the profile; per-vCPU coefficients and platform watts replace theirs.
// Either way the run's own figures are not a calibration.
func applyModel(base energy.ModelProfile, m *events.CollectModel) energy.ModelProfile {
	if m == nil {
		return base
	}
	p := base
	if m.MaxWatts > 0 {
		p.NodeIdleWatts, p.NodeMaxWatts, p.Calibration = m.IdleWatts, m.MaxWatts, nil
		return p
	}
	if m.MaxWattsPerVCPU > 0 {
		p.IdleWattsPerVCPU, p.MaxWattsPerVCPU, p.Calibration = m.IdleWattsPerVCPU, m.MaxWattsPerVCPU, nil
	}
	if m.PlatformWatts > 0 {
		p.PlatformWatts = m.PlatformWatts
	}
	return p
}

// runMeterRows are the effective configurations of the plan's runs after
// a reading m sampled with it (profile: the model applied, when the meter
// is a model).
func (r *runner) runMeterRows(p meterPlan, m energy.Measurement, profile *energy.ModelProfile) []store.RunMeter {
	var out []store.RunMeter
	modelJSON, label := "", "measured"
	if m.Estimated {
		label = "estimated"
	}
	if profile != nil && m.Source == energy.SourceModel {
		b, _ := json.Marshal(profile)
		modelJSON, label = string(b), profile.Label()
	}
	for _, run := range p.runs {
		row := store.RunMeter{ExperimentID: run.experimentID, RunID: run.runID, Node: r.sc.Node, SourceID: r.sc.ID, TsMs: m.Time.UnixMilli(),
			IntervalMs: p.interval.Milliseconds(), Meter: m.Source, Estimated: m.Estimated, Label: label, Model: modelJSON, Collector: r.c.cfg.Instance}
		var notes []string
		if a := run.asked; a != nil {
			row.AskedIntervalMs, row.AskedSource = a.IntervalMs, a.Source
			if a.IntervalMs > p.interval.Milliseconds() {
				why := "the collector's own interval (--interval) is finer than any run on this node asks"
				if p.intervalRun != "" {
					why = "the finest interval of the runs active on this node (" + p.intervalRun + " asked it)"
				}
				notes = append(notes, fmt.Sprintf("sampled every %s, finer than the %s asked: %s", p.interval, time.Duration(a.IntervalMs)*time.Millisecond, why))
			}
			switch {
			case a.Source == KindRAPL && m.Source != energy.SourceRAPL:
				// The analyzer flags the run (meter_fallback) from the
				// asked source and the meter; the note tells the reader.
				why := "the collector's configuration measures this node by " + r.sc.Kind
				if r.sc.Kind == KindAuto {
					why = "no readable RAPL on this node"
				}
				if m.Estimated {
					why += ", so its figures are estimated"
				}
				notes = append(notes, fmt.Sprintf("asked rapl, measured by %s (source %s): %s", m.Source, r.sc.ID, why))
			case (a.Source == KindRAPL && m.Source != energy.SourceRAPL) || (a.Source == KindModel && m.Source != energy.SourceModel):
				notes = append(notes, fmt.Sprintf("asked %s, measured by %s: the node's meter is the collector's configuration", a.Source, m.Source))
			}
			if a.Model != nil && m.Source == energy.SourceModel && p.modelRun != run.runID && *a.Model != *p.model {
				notes = append(notes, "its model differs from run "+p.modelRun+"'s, which applies (the lowest run id setting a model)")
			}
		} else if p.interval < r.c.cfg.Interval {
			notes = append(notes, fmt.Sprintf("sampled every %s, asked by another run active on this node", p.interval))
		}
		row.Note = strings.Join(notes, "; ")
		out = append(out, row)
	}
	return out
}

// recordRunMeters queues the plan's runs' configurations whose effective
// values changed since last recorded.
func (r *runner) recordRunMeters(p meterPlan, m energy.Measurement, profile *energy.ModelProfile) {
	if len(p.runs) == 0 {
		return
	}
	var changed []store.RunMeter
	seen := make(map[string]string, len(p.runs))
	for _, row := range r.runMeterRows(p, m, profile) {
		sig := fmt.Sprint(row.IntervalMs, row.Meter, row.Estimated, row.Label, row.Model, row.Note)
		seen[row.RunID] = sig
		if r.recorded[row.RunID] != sig {
			changed = append(changed, row)
		}
	}
	r.recorded = seen
	r.c.records.addMeters(changed...)
}

// fixedProfile is a profile, the calibration it was taken with (nil: the
// base profile) and the runs sampled with it at the last reading.
type fixedProfile struct {
	profile energy.ModelProfile
	cal     *energy.Calibration
	runs    map[string]bool
}

// keyModel prefixes, in the collectors' bucket, the model a source's active
// runs are sampled with (storedModel), so that a restarted collector — or
// the instance taking the source over — keeps their calibration.
const keyModel = "model."

// storedModel is a fixedProfile in the bucket.
type storedModel struct {
	Runs        []string            `json:"runs"`
	Calibration *energy.Calibration `json:"calibration,omitempty"`
}

// fixedProfile returns the profile source's runs are sampled with: the
// base profile with the calibration taken when none of the active runs has
// been sampled with the current one (no run active, or all of them new),
// kept while any of them is. A run joining a running one shares its model;
// a fit published mid-run applies to later runs, never to part of one. The
// choice is kept in the collectors' bucket whenever it or its runs change:
// a collector restarted mid-run, or another one taking the source over,
// reads it back instead of taking the newest fit (which a run begun before
// it would then have been sampled with for only part of its window).
func (c *Collector) fixedProfile(ctx context.Context, source string, base energy.ModelProfile, runs []plannedRun) energy.ModelProfile {
	c.calMu.Lock()
	f, ok := c.fixed[source]
	c.calMu.Unlock()
	if !ok && len(runs) > 0 {
		f, ok = c.loadModel(ctx, source, base)
	}
	kept := ok && slices.ContainsFunc(runs, func(pr plannedRun) bool { return f.runs[pr.runID] })
	if !kept {
		f.cal = c.calibrationOf(base)
		f.profile = base
		if f.cal != nil {
			f.profile = base.Calibrated(*f.cal)
		}
	}
	now := make(map[string]bool, len(runs))
	for _, pr := range runs {
		now[pr.runID] = true
	}
	changed := !kept || !maps.Equal(now, f.runs)
	f.runs = now
	c.calMu.Lock()
	c.fixed[source] = f
	c.calMu.Unlock()
	if changed && len(runs) > 0 {
		c.saveModel(ctx, source, f)
	}
	return f.profile
}

// calibrationOf is the calibration a run starting now is sampled with on a
// node of base: none with the collector's configured node totals, else the
// newest fit (calibrationFor).
func (c *Collector) calibrationOf(base energy.ModelProfile) *energy.Calibration {
	if base.NodeMaxWatts > 0 {
		return nil // the collector's configured node totals
	}
	return c.calibrationFor(base.CPUModel)
}

// loadModel reads source's stored model choice; false when there is none
// (or the bucket cannot say: the newest fit is taken then, as before).
func (c *Collector) loadModel(ctx context.Context, source string, base energy.ModelProfile) (fixedProfile, bool) {
	if c.kv == nil {
		return fixedProfile{}, false
	}
	kctx, cancel := context.WithTimeout(ctx, c.cfg.SourceTimeout)
	defer cancel()
	e, err := c.kv.Get(kctx, keyModel+kvKey(source))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			c.logger.Warn("the model of a source's runs is unreadable; taking the newest fit", zap.String("source", source), zap.Error(err))
		}
		return fixedProfile{}, false
	}
	var sm storedModel
	if err := json.Unmarshal(e.Value(), &sm); err != nil {
		c.logger.Warn("the stored model of a source's runs is malformed; taking the newest fit", zap.String("source", source), zap.Error(err))
		return fixedProfile{}, false
	}
	f := fixedProfile{profile: base, cal: sm.Calibration, runs: map[string]bool{}}
	if sm.Calibration != nil {
		f.profile = base.Calibrated(*sm.Calibration)
	}
	for _, r := range sm.Runs {
		f.runs[r] = true
	}
	return f, true
}

// saveModel stores source's model choice; a failure is logged (the choice
// holds in this process; only a restart before the next change loses it).
func (c *Collector) saveModel(ctx context.Context, source string, f fixedProfile) {
	if c.kv == nil {
		return
	}
	sm := storedModel{Runs: slices.Sorted(maps.Keys(f.runs)), Calibration: f.cal}
	b, err := json.Marshal(sm)
	if err != nil {
		return
	}
	kctx, cancel := context.WithTimeout(ctx, c.cfg.SourceTimeout)
	defer cancel()
	if _, err := c.kv.Put(kctx, keyModel+kvKey(source), b); err != nil {
		c.logger.Warn("the model of a source's runs not stored; a restart would take the newest fit", zap.String("source", source), zap.Error(err))
	}
}
