// The result rows of one run's computation: per node, zone, target and
// role, data quality, the run's figures and the verdict.

package analyzer

import (
	"math"
	"strings"

	"github.com/greenflow/greenflow/pkg/results"
)

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

	slo := c.lagSLO()
	if lag := lagTrendOf(c.in.ConsumerLag, m, c.cfg, slo); lag.Found {
		c.run(results.LagTrendPoints, float64(lag.Points), est)
		c.run(results.LagTrendFitStartS, float64(lag.FromMs-m.MeasureStartMs)/1000, est)
		c.run(results.LagSLOFromSpec, b2f(slo.FromSpec), est)
		if lag.Verdict {
			c.run(results.LagTrendSlope, lag.Fit.Slope, est)
			if !math.IsInf(lag.Fit.Low, 0) {
				c.run(results.LagTrendSlopeCILow, lag.Fit.Low, est)
			}
			if !math.IsInf(lag.Fit.High, 0) {
				c.run(results.LagTrendSlopeCIHigh, lag.Fit.High, est)
			}
			c.run(results.LagSLOThreshold, slo.Threshold, est)
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
	c.lateRows()
}

// lateRows says what the analysis went ahead without: per node and target
// the largest shortfall of its sources' samples before the window end,
// and the run's largest (0 when every source reached the end).
func (c *computation) lateRows() {
	var runS float64
	var by ordered[float64]
	for _, l := range c.in.Pending.Late {
		v := by.get(l.Kind + "\x00" + l.Name)
		*v = max(*v, float64(l.ShortMs)/1000)
		runS = max(runS, *v)
	}
	for _, k := range by.keys {
		kind, name, _ := strings.Cut(k, "\x00")
		scope := results.ScopeNode
		if kind == "target" {
			scope = results.ScopeTarget
		}
		c.add(scope, name, results.QualityLateS, *by.m[k], false)
	}
	c.run(results.QualityLateS, runS, false)
}

// lagSLO is the run's lag-trend objective: its spec's, else the analyzer's.
func (c *computation) lagSLO() LagSLO {
	if c.in.LagSLO.Threshold > 0 {
		return c.in.LagSLO
	}
	return c.cfg.LagSLO()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
