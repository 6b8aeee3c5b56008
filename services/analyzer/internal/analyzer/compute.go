package analyzer

import (
	"slices"
	"sort"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Compute turns a run's inputs into its result rows and its run.analyzed
// event: energy attributed to nodes, zones, targets and roles, the
// workload's figures, the lag trend, data quality and the verdict. It is
// pure — the same inputs give the same rows, bit for bit, since every sum
// runs in a fixed order.
func Compute(in Inputs, cfg Config) ([]store.Result, events.RunAnalyzed) {
	rows, sum := compute(in, cfg)
	rows, sum = addMeterFallback(in.Meters, rows, sum) // meterfallback.go
	return addRecordedGaps(in.Run, in.Gaps, rows, sum) // gaps.go
}

func compute(in Inputs, cfg Config) ([]store.Result, events.RunAnalyzed) {
	m := in.Run
	roles := roleOf(m)
	c := computation{in: in, cfg: cfg, m: m, durS: float64(m.MeasureEndMs-m.MeasureStartMs) / 1000,
		hasBase: m.BaselineEnd > m.BaselineStart, baseS: float64(m.BaselineEnd-m.BaselineStart) / 1000}
	window, cross := separateMeters(in.Window, in.WindowBySource, m.MeasureStartMs, m.MeasureEndMs)
	c.cross = cross
	win := seriesOf(window, m.MeasureStartMs, m.MeasureEndMs, roles)
	var base []seriesEnergy
	if c.hasBase {
		baseline, _ := separateMeters(in.Baseline, in.BaselineBySource, m.BaselineStart, m.BaselineEnd)
		base = seriesOf(baseline, m.BaselineStart, m.BaselineEnd, nil)
	}
	c.attribute(win, base, roles)
	c.evts = countEvents(in, cfg)

	nodes := runNodes(m)
	vin := VerdictInput{WindowMs: m.MeasureEndMs - m.MeasureStartMs, OfferedRate: m.OfferedRate, Events: c.evts.N, EventsFrom: c.evts.From,
		Nodes: nodes, SamplesLate: in.Pending.late(), Load: LoadAccount{Takeovers: m.LoadTakeovers, Restarts: m.LoadRestarts,
			Backfilled: m.RecordsBackfilled, Missed: m.RecordsMissed, RateDeviated: in.LoadRate.Flagged()}}
	for _, n := range nodes {
		if p, ok := c.nodeP.m[n]; !ok || p.J == 0 {
			vin.MissingNodes = append(vin.MissingNodes, n)
		}
	}
	if c.nodeJ == 0 {
		// Nothing to attribute: the verdict and the load are all there is.
		v := Judge(vin, cfg.Policy())
		c.run(results.DurationS, c.durS, false)
		c.verdictRows(v, vin)
		return c.rows, c.summary(0, 0, 0, false, v)
	}
	vin.Series, vin.LostTargets, vin.UnmeasuredTargets = coverage(m, win, in.SampledTargets)
	verdict := Judge(vin, cfg.Policy())

	c.partRows(vin.Series)
	c.qualityRows()
	c.crossMeterRows()
	sutJ, ujPerEvent := c.runRows()
	verdict.Flags = c.derivedFlags(verdict.Flags)
	switch lag := lagTrendOf(c.in.ConsumerLag, m, c.cfg, c.lagSLO()); {
	case lag.Unresolved():
		verdict.Flags = addFlag(verdict.Flags, results.FlagLagVerdictUnresolved)
	case lag.Verdict && !lag.OK:
		// Said beside the figures, not only in lag_slo_ok: a SUT that
		// fell behind has the lowest µJ/event of all.
		verdict.Flags = addFlag(verdict.Flags, results.FlagLagSLOFailed)
	case !lag.Verdict && (lag.Found || lag.FromMs >= m.MeasureEndMs):
		// A lag series but too few samples after the fit's start (a
		// sampler that fell behind), or a warm-up reaching past the
		// window (the series is read from the fit's start, so none):
		// said, not left as a missing lag_slo_ok row.
		verdict.Flags = addFlag(verdict.Flags, results.FlagLagNotEvaluated)
	}
	c.verdictRows(verdict, vin)
	return c.rows, c.summary(sutJ, c.nodeJ, ujPerEvent, c.estimated, verdict)
}

// part accumulates the energy of a node, zone, target or role.
type part struct {
	J, BaseJ, PeakW float64
	Est             bool
	Samples         uint64
}

func (p *part) add(s seriesEnergy) {
	p.J += s.Joules
	p.PeakW = max(p.PeakW, s.PeakW)
	p.Est = p.Est || s.Estimated
	p.Samples += s.Samples
}

// nodeQuality accumulates a node's data-quality figures.
type nodeQuality struct {
	Gaps, Resets            uint64
	GapMs, UncoveredMs      float64
	MaxGapMs                float64
	BridgedJ, PartsJ        float64
	Estimated, HasNodeTotal bool
	PowerOnly               bool
	Sources                 []string
}

// ordered keeps first-seen order so sums run in the same order every time.
type ordered[T any] struct {
	keys []string
	m    map[string]*T
}

func (o *ordered[T]) get(k string) *T {
	if o.m == nil {
		o.m = map[string]*T{}
	}
	v, ok := o.m[k]
	if !ok {
		v = new(T)
		o.m[k] = v
		o.keys = append(o.keys, k)
	}
	return v
}

// computation is one run of Compute: the attributed parts, the events and
// the rows written so far.
type computation struct {
	in               Inputs
	cfg              Config
	m                *events.RunMeasured
	durS, baseS      float64
	hasBase          bool
	nodeP, zoneP     ordered[part]
	targetP, roleP   ordered[part]
	quality          ordered[nodeQuality]
	nodeJ, nodeBaseJ float64
	peakNodeW        float64
	estimated        bool // some node's figures come from the model
	evts             windowEvents
	cross            []crossMeter // node totals measured by two meters at once
	rows             []store.Result
}

// add appends a result row; its unit comes from the result metrics' table,
// and it is estimated when est (the energy behind it is) and the metric can
// be.
func (c *computation) add(scope, subject, metric string, v float64, est bool) {
	c.rows = append(c.rows, store.Result{Scope: scope, Subject: subject, Metric: metric, Value: v, Unit: results.Unit(metric),
		Estimated: est && results.Estimable(metric)})
}

func (c *computation) run(metric string, v float64, est bool) {
	c.add(results.ScopeRun, "", metric, v, est)
}

// roleName is the role a series' energy counts for.
func roleName(s seriesEnergy, roles map[string]string) string {
	if s.Scope == "unattributed" {
		return results.RoleUnattributed
	}
	if r, ok := roles[s.Target]; ok {
		return r
	}
	return results.RoleOther
}

// attribute sums the window's series into nodes, zones, targets and roles
// (and the baseline's into their baselines), and the nodes' quality.
func (c *computation) attribute(win, base []seriesEnergy, roles map[string]string) {
	for _, s := range win {
		q := c.quality.get(s.Node)
		switch s.Scope {
		case "node":
			c.nodeP.get(s.Node).add(s)
			q.HasNodeTotal = true
			q.Gaps += s.Gaps
			q.GapMs += s.GapMs
			q.MaxGapMs = max(q.MaxGapMs, s.MaxGapMs)
			q.BridgedJ += s.BridgedJ
			q.Resets += s.Resets
			q.UncoveredMs = max(q.UncoveredMs, s.UncoveredMs)
			q.Estimated = q.Estimated || s.Estimated
			q.PowerOnly = s.PowerOnly
			q.Sources = s.Sources
		case "zone":
			c.zoneP.get(s.Node + "/" + s.Zone).add(s)
		default: // process, pod, unattributed
			q.PartsJ += s.Joules
			c.roleP.get(roleName(s, roles)).add(s)
			if _, ok := roles[s.Target]; ok && s.Scope != "unattributed" {
				c.targetP.get(s.Target).add(s)
			}
		}
	}
	for _, s := range base {
		switch s.Scope {
		case "node":
			c.nodeP.get(s.Node).BaseJ += s.Joules
		case "zone":
		default:
			c.roleP.get(roleName(s, roles)).BaseJ += s.Joules
			if _, ok := roles[s.Target]; ok && s.Scope != "unattributed" {
				c.targetP.get(s.Target).BaseJ += s.Joules
			}
		}
	}
	for _, n := range c.nodeP.keys {
		p := c.nodeP.m[n]
		c.nodeJ += p.J
		c.nodeBaseJ += p.BaseJ
		c.peakNodeW = max(c.peakNodeW, p.PeakW)
		c.estimated = c.estimated || p.Est
	}
}

// derivedFlags adds to flags what the derived figures written so far say
// about themselves: a negative dynamic energy of a node, a target, the
// SUT's role or the run's node or SUT total is flagged, not left to read as
// a plain number. The unattributed rest and other processes are left out:
// when the load takes a larger share of a busy node they lose theirs, so
// their dynamic energy is negative by displacement (in every run of the
// capacity example on this shared machine), which says nothing about the
// measurement.
func (c *computation) derivedFlags(flags []string) []string {
	for _, r := range c.rows {
		var measured bool
		switch r.Metric {
		case results.DynamicNodeEnergyJ, results.SUTDynamicEnergyJ:
			measured = true
		case results.DynamicEnergyJ:
			measured = r.Scope == results.ScopeNode || r.Scope == results.ScopeTarget || (r.Scope == results.ScopeRole && r.Subject == results.RoleSUT)
		}
		// Below zero by more than rounding: energy minus baseline power ×
		// duration of a node at its baseline (a constant model's, say)
		// comes out at ±1e-11 J, which is zero, not a finding.
		if measured && r.Value < -roundingJ*max(c.nodeJ, 1) {
			flags = addFlag(flags, results.FlagDynamicEnergyNegative)
		}
	}
	return flags
}

// roundingJ is the relative size of float rounding in a dynamic energy:
// a billionth of the run's node energy.
const roundingJ = 1e-9

// addFlag adds flag to the sorted flags unless it is there.
func addFlag(flags []string, flag string) []string {
	if slices.Contains(flags, flag) {
		return flags
	}
	flags = append(flags, flag)
	sort.Strings(flags)
	return flags
}

// summary is the run.analyzed event of the run.
func (c *computation) summary(sutJ, nodeJ, ujPerEvent float64, estimated bool, v Verdict) events.RunAnalyzed {
	m := c.m
	return events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, DurationS: c.durS, EnergyJ: sutJ, NodeEnergyJ: nodeJ,
		MeanPowerW: sutJ / c.durS, Events: c.evts.count(), MicroJPerEvent: ujPerEvent, Estimated: estimated,
		Invalid: v.Invalid, Reason: v.Reason(), Flags: v.Flags, TsMs: c.in.NowMs}
}

// coverage gathers the verdict's view of the samples: the coverage of every
// node total and of every target series of the run in the window, the
// targets measured during the run but not in the window (lost: those of
// sampled), and those never measured at all (unmeasured: the meter cannot
// see them).
func coverage(m *events.RunMeasured, win []seriesEnergy, sampled []string) (series []SeriesQuality, lost, unmeasured []string) {
	inWin := map[string]bool{}
	isTarget := map[string]bool{}
	for _, t := range m.Targets {
		isTarget[t.ID] = true
	}
	for _, s := range win {
		switch {
		case s.Scope == "node":
			series = append(series, s.quality("node", s.Node))
		case isTargetScope(s.Scope) && isTarget[s.Target]:
			inWin[s.Target] = true
			series = append(series, s.quality("target", s.Target))
		}
	}
	seen := map[string]bool{}
	for _, id := range sampled {
		seen[id] = true
	}
	for _, id := range targetsWithout(m, inWin) {
		if seen[id] {
			lost = append(lost, id)
		} else {
			unmeasured = append(unmeasured, id)
		}
	}
	return series, lost, unmeasured
}

// runNodes returns the sorted distinct nodes of the run's targets.
func runNodes(m *events.RunMeasured) []string {
	set := map[string]bool{}
	for _, t := range m.Targets {
		set[t.Node] = true
	}
	return sortedKeys(set)
}

// roleOf maps the run's target ids to their roles; a target without a role
// is the system under test, as the provisioners have always meant it.
func roleOf(m *events.RunMeasured) map[string]string {
	out := make(map[string]string, len(m.Targets))
	for _, t := range m.Targets {
		r := t.Role
		if r == "" {
			r = results.RoleSUT
		}
		out[t.ID] = r
	}
	return out
}

// quality is the verdict's view of one series.
func (s seriesEnergy) quality(kind, name string) SeriesQuality {
	return SeriesQuality{Kind: kind, Name: name, IntervalMs: s.IntervalMs, MedianIntervalMs: s.MedianIntervalMs, Gaps: s.Gaps, MaxGapMs: s.MaxGapMs,
		Stretches: s.Stretches, MaxStretchMs: s.MaxStretchMs, OverlapMs: s.OverlapMs, Collectors: s.Collectors, UncoveredMs: s.UncoveredMs}
}
