package analyzer

import (
	"math"
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
	m := in.Run
	roles := roleOf(m)
	c := computation{in: in, cfg: cfg, m: m, durS: float64(m.MeasureEndMs-m.MeasureStartMs) / 1000,
		hasBase: m.BaselineEnd > m.BaselineStart, baseS: float64(m.BaselineEnd-m.BaselineStart) / 1000}
	win := seriesOf(in.Window, m.MeasureStartMs, m.MeasureEndMs, roles)
	var base []seriesEnergy
	if c.hasBase {
		base = seriesOf(in.Baseline, m.BaselineStart, m.BaselineEnd, nil)
	}
	c.attribute(win, base, roles)
	c.evts = countEvents(in, cfg)

	nodes := runNodes(m)
	vin := VerdictInput{WindowMs: m.MeasureEndMs - m.MeasureStartMs, OfferedRate: m.OfferedRate, Events: c.evts.N, EventsFrom: c.evts.From,
		Nodes: nodes, SamplesLate: in.Pending.late(), Load: LoadAccount{Takeovers: m.LoadTakeovers, Restarts: m.LoadRestarts,
			Backfilled: m.RecordsBackfilled, Missed: m.RecordsMissed}}
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
	sutJ, ujPerEvent := c.runRows()
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

// energyRows adds the rows every part has: energy, mean and peak power,
// and with a baseline the baseline power and the dynamic energy above it.
func (c *computation) energyRows(scope, subject string, p *part, peakW float64) {
	c.add(scope, subject, results.EnergyJ, p.J, p.Est)
	c.add(scope, subject, results.MeanPowerW, p.J/c.durS, p.Est)
	c.add(scope, subject, results.PeakPowerW, peakW, p.Est)
	if c.hasBase {
		c.add(scope, subject, results.BaselinePowerW, p.BaseJ/c.baseS, p.Est)
		c.add(scope, subject, results.DynamicEnergyJ, p.J-p.BaseJ/c.baseS*c.durS, p.Est)
	}
}

// partRows adds the rows of every node, zone, target and role.
func (c *computation) partRows(series []SeriesQuality) {
	for _, n := range c.nodeP.keys {
		c.energyRows(results.ScopeNode, n, c.nodeP.m[n], c.nodeP.m[n].PeakW)
		c.add(results.ScopeNode, n, results.Samples, float64(c.nodeP.m[n].Samples), false)
	}
	for _, z := range c.zoneP.keys {
		p := c.zoneP.m[z]
		c.add(results.ScopeZone, z, results.EnergyJ, p.J, p.Est)
		c.add(results.ScopeZone, z, results.MeanPowerW, p.J/c.durS, p.Est)
	}
	for _, t := range c.targetP.keys {
		c.energyRows(results.ScopeTarget, t, c.targetP.m[t], c.targetP.m[t].PeakW)
	}
	for _, q := range series {
		if q.Kind == "target" {
			c.add(results.ScopeTarget, q.Name, results.QualitySampleGaps, float64(q.Gaps), false)
			c.add(results.ScopeTarget, q.Name, results.QualityMaxGapS, q.MaxGapMs/1000, false)
			c.add(results.ScopeTarget, q.Name, results.QualityUncoveredS, q.UncoveredMs/1000, false)
		}
	}
	c.roleP.get(results.RoleSUT) // reported even when the SUT drew nothing
	for _, r := range c.roleP.keys {
		p := c.roleP.m[r]
		c.energyRows(results.ScopeRole, r, p, c.in.RolePeaks[r])
		c.add(results.ScopeRole, r, results.ShareOfNodeEnergy, p.J/c.nodeJ, p.Est)
	}
}

// qualityRows adds each node's data-quality rows and the run's totals.
func (c *computation) qualityRows() {
	var gaps, resets uint64
	var gapMs, bridgedJ, uncoveredMs, residualJ float64
	estNodes := 0
	for _, n := range c.quality.keys {
		q := c.quality.m[n]
		if !q.HasNodeTotal {
			continue
		}
		residual := c.nodeP.m[n].J - q.PartsJ
		add := func(metric string, v float64) { c.add(results.ScopeNode, n, metric, v, q.Estimated) }
		add(results.QualitySampleGaps, float64(q.Gaps))
		add(results.QualityGapS, q.GapMs/1000)
		add(results.QualityMaxGapS, q.MaxGapMs/1000)
		add(results.QualityBridgedEnergyJ, q.BridgedJ)
		add(results.QualityUncoveredS, q.UncoveredMs/1000)
		add(results.QualityCounterResets, float64(q.Resets))
		add(results.QualityEstimatedSource, b2f(q.Estimated))
		add(results.QualityAttributionResidualJ, residual)
		add(results.QualityMixedSources, b2f(len(q.Sources) > 1))
		add(results.IntegratedFromPower, b2f(q.PowerOnly))
		gaps += q.Gaps
		resets += q.Resets
		gapMs += q.GapMs
		bridgedJ += q.BridgedJ
		uncoveredMs = max(uncoveredMs, q.UncoveredMs)
		residualJ += residual
		if q.Estimated {
			estNodes++
		}
	}
	est := c.estimated
	c.run(results.QualitySampleGaps, float64(gaps), est)
	c.run(results.QualityGapS, gapMs/1000, est)
	c.run(results.QualityBridgedEnergyJ, bridgedJ, est)
	c.run(results.QualityUncoveredS, uncoveredMs/1000, est)
	c.run(results.QualityCounterResets, float64(resets), est)
	c.run(results.QualityEstimatedSource, float64(estNodes), est)
	c.run(results.QualityAttributionResidualJ, residualJ, est)
}

// runRows adds the run's energy, load, per-event, data volume, lag trend
// and collector overhead rows; it returns the SUT's energy and µJ per
// event for run.analyzed.
func (c *computation) runRows() (sutJ, ujPerEvent float64) {
	m, est, durS, nodeJ := c.m, c.estimated, c.durS, c.nodeJ
	sut := c.roleP.get(results.RoleSUT)
	sutJ = sut.J
	c.run(results.DurationS, durS, est)
	c.run(results.SUTEnergyJ, sutJ, est)
	c.run(results.NodeEnergyJ, nodeJ, est)
	c.run(results.UnattributedEnergyJ, c.roleP.get(results.RoleUnattributed).J, est)
	c.run(results.SUTMeanPowerW, sutJ/durS, est)
	c.run(results.SUTPeakPowerW, c.in.RolePeaks[results.RoleSUT], est)
	c.run(results.NodeMeanPowerW, nodeJ/durS, est)
	c.run(results.NodePeakPowerW, c.peakNodeW, est)
	var sutDynJ float64
	if c.hasBase {
		c.run(results.BaselineNodePowerW, c.nodeBaseJ/c.baseS, est)
		c.run(results.DynamicNodeEnergyJ, nodeJ-c.nodeBaseJ/c.baseS*durS, est)
		sutDynJ = sutJ - sut.BaseJ/c.baseS*durS
		c.run(results.SUTBaselinePowerW, sut.BaseJ/c.baseS, est)
		c.run(results.SUTDynamicEnergyJ, sutDynJ, est)
	}
	n := c.evts.count()
	c.run(results.Events, float64(n), est)
	c.run(results.RecordsSentTotal, float64(m.RecordsSent), est)
	c.run(results.OfferedRateEPS, m.OfferedRate, est)
	c.run(results.ThroughputEPS, float64(n)/durS, est)
	if c.evts.HasAcked {
		c.run(results.EventsAcknowledged, c.evts.Acked, est)
	}
	if n > 0 {
		ujPerEvent = sutJ / float64(n) * 1e6
		c.run(results.SUTMicroJPerEvent, ujPerEvent, est)
		c.run(results.NodeMicroJPerEvent, nodeJ/float64(n)*1e6, est)
		if c.hasBase {
			c.run(results.SUTDynamicMicroJPerEvent, sutDynJ/float64(n)*1e6, est)
		}
	}
	if sutJ > 0 {
		c.run(results.EventsPerJoule, float64(n)/sutJ, est)
	}
	c.run(results.NodeEventsPerJoule, float64(n)/nodeJ, est)

	if c.in.Workload != nil {
		if bytes, ok := MeanRecordBytes(*c.in.Workload, m.MeasureStartMs); ok {
			mb := float64(n) * bytes / 1e6
			c.run(results.RecordBytesMean, bytes, est)
			c.run(results.DataMB, mb, est)
			c.run(results.DataMBFromWorkload, 1, est)
			if mb > 0 {
				c.run(results.SUTJoulePerMB, sutJ/mb, est)
				c.run(results.NodeJoulePerMB, nodeJ/mb, est)
			}
		}
	}

	if lag := lagTrendOf(c.in.ConsumerLag, m, c.cfg); lag.Found {
		c.run(results.LagTrendPoints, float64(lag.Points), est)
		if lag.Verdict {
			c.run(results.LagTrendSlope, lag.Slope, est)
			c.run(results.LagSLOThreshold, c.cfg.LagThreshold, est)
			c.run(results.LagSLOOK, b2f(lag.OK), est)
		}
	}
	if len(c.in.CollectorCPU) > 0 {
		cpuS := windowDelta(c.in.CollectorCPU, m.MeasureStartMs, m.MeasureEndMs)
		c.run(results.CollectorCPUSeconds, cpuS, est)
		c.run(results.CollectorCPUCores, cpuS/durS, est)
	}
	return sutJ, ujPerEvent
}

// verdictRows adds the run-scope rows of the verdict: one flag row per
// flag, the load's delivery against the offer and the load generator's
// account.
func (c *computation) verdictRows(v Verdict, in VerdictInput) {
	m := c.m
	c.run(results.Invalid, b2f(v.Invalid), false)
	c.run(results.EventsFromBroker, b2f(in.EventsFrom == EventsFromBroker), false)
	c.run(results.EventsFromProgressSeries, b2f(in.EventsFrom == EventsFromGenerator), false)
	c.run(results.RecordsDelivered, float64(m.RecordsDelivered), false)
	c.run(results.RecordsDeliveredFromBroker, b2f(m.DeliveredFromBroker), false)
	c.run(results.RecordsMissed, float64(m.RecordsMissed), false)
	c.run(results.RecordsBackfilled, float64(m.RecordsBackfilled), false)
	c.run(results.LoadTakeovers, float64(m.LoadTakeovers), false)
	c.run(results.LoadRestarts, float64(m.LoadRestarts), false)
	if in.OfferedRate > 0 {
		c.run(results.EventsOffered, in.OfferedRate*float64(in.WindowMs)/1000, false)
	}
	if !math.IsNaN(v.DeliveredRatio) {
		c.run(results.EventsDeliveredRatio, v.DeliveredRatio, false)
	}
	for _, f := range v.Flags {
		c.run(results.FlagMetric(f), 1, false)
	}
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
			series = append(series, SeriesQuality{Kind: "node", Name: s.Node, IntervalMs: s.IntervalMs, Gaps: s.Gaps, MaxGapMs: s.MaxGapMs,
				UncoveredMs: s.UncoveredMs})
		case isTargetScope(s.Scope) && isTarget[s.Target]:
			inWin[s.Target] = true
			series = append(series, SeriesQuality{Kind: "target", Name: s.Target, IntervalMs: s.IntervalMs, Gaps: s.Gaps, MaxGapMs: s.MaxGapMs,
				UncoveredMs: s.UncoveredMs})
		}
	}
	seen := map[string]bool{}
	for _, id := range sampled {
		seen[id] = true
	}
	var missing []string
	for _, t := range m.Targets {
		if t.Kind != "node" && !inWin[t.ID] {
			missing = append(missing, t.ID)
		}
	}
	sort.Strings(missing)
	for _, id := range missing {
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
	nodes := make([]string, 0, len(set))
	for n := range set {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return nodes
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

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
