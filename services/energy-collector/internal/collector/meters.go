package collector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

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

// profileFor is a node's base profile with the newest calibration applied
// (point 2: nodes without a meter use the model calibrated on a node with
// one); without a calibration, the profile itself.
func (c *Collector) profileFor(base energy.ModelProfile) energy.ModelProfile {
	if base.NodeMaxWatts > 0 {
		return base // the collector's configured node totals
	}
	if cal := c.calibrationFor(base.CPUModel); cal != nil {
		return base.Calibrated(*cal)
	}
	return base
}

// fixedProfile is a profile and the runs sampled with it at the last
// reading.
type fixedProfile struct {
	profile energy.ModelProfile
	runs    map[string]bool
}

// fixedProfile returns the profile source's runs are sampled with: the
// base profile with the calibration taken when none of the active runs has
// been sampled with the current one (no run active, or all of them new),
// kept while any of them is. A run joining a running one shares its model;
// a fit published mid-run applies to later runs, never to part of one.
func (c *Collector) fixedProfile(source string, base energy.ModelProfile, runs []plannedRun) energy.ModelProfile {
	c.calMu.Lock()
	f, ok := c.fixed[source]
	c.calMu.Unlock()
	if !ok || !slices.ContainsFunc(runs, func(pr plannedRun) bool { return f.runs[pr.runID] }) {
		f.profile = c.profileFor(base)
	}
	f.runs = make(map[string]bool, len(runs))
	for _, pr := range runs {
		f.runs[pr.runID] = true
	}
	c.calMu.Lock()
	c.fixed[source] = f
	c.calMu.Unlock()
	return f.profile
}
