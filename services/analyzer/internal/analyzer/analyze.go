package analyzer

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

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

// nodeQuality accumulates a node's data-quality flags.
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

// Analyze computes a run's results without storing them.
func (a *Analyzer) Analyze(ctx context.Context, m *events.RunMeasured) ([]store.Result, events.RunAnalyzed, error) {
	if m.MeasureEndMs <= m.MeasureStartMs {
		return nil, events.RunAnalyzed{}, bus.Permanent(fmt.Errorf("run %s: measurement window [%d, %d] is empty", m.RunID, m.MeasureStartMs, m.MeasureEndMs))
	}
	nodes := runNodes(m)
	if len(nodes) == 0 {
		return nil, events.RunAnalyzed{}, bus.Permanent(fmt.Errorf("run %s has no measurement targets", m.RunID))
	}
	roles := roleOf(m)
	win, err := a.energyIn(ctx, nodes, m.MeasureStartMs, m.MeasureEndMs, roles)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	hasBase := m.BaselineEnd > m.BaselineStart
	var base []seriesEnergy
	if hasBase {
		if base, err = a.energyIn(ctx, nodes, m.BaselineStart, m.BaselineEnd, nil); err != nil {
			return nil, events.RunAnalyzed{}, err
		}
	}
	baseS := float64(m.BaselineEnd-m.BaselineStart) / 1000

	var nodeP, zoneP, targetP, roleP ordered[part]
	var quality ordered[nodeQuality]
	roleName := func(s seriesEnergy) string {
		if s.Scope == "unattributed" {
			return RoleUnattributed
		}
		if r, ok := roles[s.Target]; ok {
			return r
		}
		return RoleOther
	}
	for _, s := range win {
		q := quality.get(s.Node)
		switch s.Scope {
		case "node":
			nodeP.get(s.Node).add(s)
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
			zoneP.get(s.Node + "/" + s.Zone).add(s)
		default: // process, pod, unattributed
			q.PartsJ += s.Joules
			roleP.get(roleName(s)).add(s)
			if _, ok := roles[s.Target]; ok && s.Scope != "unattributed" {
				targetP.get(s.Target).add(s)
			}
		}
	}
	for _, s := range base {
		switch s.Scope {
		case "node":
			nodeP.get(s.Node).BaseJ += s.Joules
		case "zone":
		default:
			roleP.get(roleName(s)).BaseJ += s.Joules
			if _, ok := roles[s.Target]; ok && s.Scope != "unattributed" {
				targetP.get(s.Target).BaseJ += s.Joules
			}
		}
	}
	var nodeJ, nodeBaseJ, peakNodeW float64
	estimated := false
	for _, n := range nodeP.keys {
		p := nodeP.m[n]
		nodeJ += p.J
		nodeBaseJ += p.BaseJ
		peakNodeW = max(peakNodeW, p.PeakW)
		estimated = estimated || p.Est
	}
	durS := float64(m.MeasureEndMs-m.MeasureStartMs) / 1000
	pending, err := a.dataPending(ctx, m, nodes)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	evts, err := a.windowEvents(ctx, m)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	vin := VerdictInput{WindowMs: m.MeasureEndMs - m.MeasureStartMs, OfferedRate: m.OfferedRate, Events: evts.N, EventsFrom: evts.From, Nodes: nodes,
		SamplesLate: pending.late(), Load: LoadAccount{Takeovers: m.LoadTakeovers, Restarts: m.LoadRestarts, Backfilled: m.RecordsBackfilled,
			Missed: m.RecordsMissed}}
	for _, n := range nodes {
		if p, ok := nodeP.m[n]; !ok || p.J == 0 {
			vin.MissingNodes = append(vin.MissingNodes, n)
		}
	}
	if nodeJ == 0 {
		// Nothing to attribute: the verdict and the load are all there is.
		v := Judge(vin, a.cfg.Policy())
		var res []store.Result
		res = append(res, store.Result{Scope: "run", Metric: "duration_s", Value: durS, Unit: "s"})
		res = append(res, verdictRows(v, vin, m)...)
		return res, a.summary(m, durS, 0, 0, evts, 0, false, v), nil
	}
	if vin.Series, vin.LostTargets, vin.UnmeasuredTargets, err = a.targetCoverage(ctx, m, win); err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	verdict := Judge(vin, a.cfg.Policy())
	peaks, err := a.rolePeaks(ctx, nodes, m, roles)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}

	var res []store.Result
	add := func(scope, subject, metric string, v float64, unit string, est bool) {
		res = append(res, store.Result{Scope: scope, Subject: subject, Metric: metric, Value: v, Unit: unit, Estimated: est})
	}
	// energy adds the rows every part has: energy, mean and peak power, and
	// with a baseline the baseline power and the dynamic energy above it.
	energy := func(scope, subject string, p *part, peakW float64) {
		add(scope, subject, "energy_j", p.J, "J", p.Est)
		add(scope, subject, "mean_power_w", p.J/durS, "W", p.Est)
		add(scope, subject, "peak_power_w", peakW, "W", p.Est)
		if hasBase {
			add(scope, subject, "baseline_power_w", p.BaseJ/baseS, "W", p.Est)
			add(scope, subject, "dynamic_energy_j", p.J-p.BaseJ/baseS*durS, "J", p.Est)
		}
	}
	for _, n := range nodeP.keys {
		energy("node", n, nodeP.m[n], nodeP.m[n].PeakW)
		add("node", n, "samples", float64(nodeP.m[n].Samples), "1", false)
	}
	for _, z := range zoneP.keys {
		p := zoneP.m[z]
		add("zone", z, "energy_j", p.J, "J", p.Est)
		add("zone", z, "mean_power_w", p.J/durS, "W", p.Est)
	}
	for _, t := range targetP.keys {
		energy("target", t, targetP.m[t], targetP.m[t].PeakW)
	}
	for _, q := range vin.Series {
		if q.Kind == "target" {
			add("target", q.Name, "quality_sample_gaps", float64(q.Gaps), "1", false)
			add("target", q.Name, "quality_max_gap_s", q.MaxGapMs/1000, "s", false)
			add("target", q.Name, "quality_uncovered_s", q.UncoveredMs/1000, "s", false)
		}
	}
	sut := roleP.get(RoleSUT) // reported even when the SUT drew nothing
	for _, r := range roleP.keys {
		p := roleP.m[r]
		energy("role", r, p, peaks[r])
		add("role", r, "share_of_node_energy", p.J/nodeJ, "1", p.Est)
	}

	// Quality, per node and for the run.
	var gaps, resets uint64
	var gapMs, bridgedJ, uncoveredMs, residualJ float64
	estNodes := 0
	for _, n := range quality.keys {
		q := quality.m[n]
		if !q.HasNodeTotal {
			continue
		}
		residual := nodeP.m[n].J - q.PartsJ
		add("node", n, "quality_sample_gaps", float64(q.Gaps), "1", false)
		add("node", n, "quality_gap_s", q.GapMs/1000, "s", false)
		add("node", n, "quality_max_gap_s", q.MaxGapMs/1000, "s", false)
		add("node", n, "quality_bridged_energy_j", q.BridgedJ, "J", q.Estimated)
		add("node", n, "quality_uncovered_s", q.UncoveredMs/1000, "s", false)
		add("node", n, "quality_counter_resets", float64(q.Resets), "1", false)
		add("node", n, "quality_estimated_source", b2f(q.Estimated), "bool", false)
		add("node", n, "quality_attribution_residual_j", residual, "J", q.Estimated)
		add("node", n, "quality_mixed_sources", b2f(len(q.Sources) > 1), "bool", false)
		add("node", n, "integrated_from_power", b2f(q.PowerOnly), "bool", false)
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

	run := func(metric string, v float64, unit string, est bool) { add("run", "", metric, v, unit, est) }
	sutJ, unattrJ := sut.J, roleP.get(RoleUnattributed).J
	run("duration_s", durS, "s", false)
	run("sut_energy_j", sutJ, "J", estimated)
	run("node_energy_j", nodeJ, "J", estimated)
	run("unattributed_energy_j", unattrJ, "J", estimated)
	run("sut_mean_power_w", sutJ/durS, "W", estimated)
	run("sut_peak_power_w", peaks[RoleSUT], "W", estimated)
	run("node_mean_power_w", nodeJ/durS, "W", estimated)
	run("node_peak_power_w", peakNodeW, "W", estimated)
	var sutDynJ float64
	if hasBase {
		run("baseline_node_power_w", nodeBaseJ/baseS, "W", estimated)
		run("dynamic_node_energy_j", nodeJ-nodeBaseJ/baseS*durS, "J", estimated)
		sutDynJ = sutJ - sut.BaseJ/baseS*durS
		run("sut_baseline_power_w", sut.BaseJ/baseS, "W", estimated)
		run("sut_dynamic_energy_j", sutDynJ, "J", estimated)
	}
	n := evts.count()
	run("events", float64(n), "1", false)
	run("records_sent_total", float64(m.RecordsSent), "1", false)
	run("offered_rate_eps", m.OfferedRate, "1/s", false)
	run("throughput_eps", float64(n)/durS, "1/s", false)
	if evts.HasAcked {
		run("events_acknowledged", evts.Acked, "1", false)
	}
	var ujPerEvent float64
	if n > 0 {
		ujPerEvent = sutJ / float64(n) * 1e6
		run("sut_uj_per_event", ujPerEvent, "uJ", estimated)
		run("node_uj_per_event", nodeJ/float64(n)*1e6, "uJ", estimated)
		if hasBase {
			run("sut_dynamic_uj_per_event", sutDynJ/float64(n)*1e6, "uJ", estimated)
		}
	}
	if sutJ > 0 {
		run("events_per_joule", float64(n)/sutJ, "1/J", estimated)
	}
	run("node_events_per_joule", float64(n)/nodeJ, "1/J", estimated)

	cfg, haveCfg, err := a.runConfig(ctx, m)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	if haveCfg {
		if bytes, ok := MeanRecordBytes(cfg.Workload, m.MeasureStartMs); ok {
			mb := float64(n) * bytes / 1e6
			run("record_bytes_mean", bytes, "B", false)
			run("data_mb", mb, "MB", false)
			run("data_mb_from_workload", 1, "bool", false)
			if mb > 0 {
				run("sut_j_per_mb", sutJ/mb, "J/MB", estimated)
				run("node_j_per_mb", nodeJ/mb, "J/MB", estimated)
			}
		}
	}

	lag, err := a.lagTrendOf(ctx, m)
	if err != nil {
		return nil, events.RunAnalyzed{}, err
	}
	if lag.Found {
		run("lag_trend_points", float64(lag.Points), "1", false)
		if lag.Verdict {
			run("lag_trend_slope", lag.Slope, "msg/s", false)
			run("lag_slo_threshold", a.cfg.LagThreshold, "msg/s", false)
			run("lag_slo_ok", b2f(lag.OK), "bool", false)
		}
	}
	if cpuS, ok, err := a.windowDelta(ctx, m, MetricCollectorCPU); err != nil {
		return nil, events.RunAnalyzed{}, err
	} else if ok {
		run("collector_cpu_seconds", cpuS, "s", false)
		run("collector_cpu_cores", cpuS/durS, "1", false)
	}

	run("quality_sample_gaps", float64(gaps), "1", false)
	run("quality_gap_s", gapMs/1000, "s", false)
	run("quality_bridged_energy_j", bridgedJ, "J", estimated)
	run("quality_uncovered_s", uncoveredMs/1000, "s", false)
	run("quality_counter_resets", float64(resets), "1", false)
	run("quality_estimated_source", float64(estNodes), "1", false)
	run("quality_attribution_residual_j", residualJ, "J", estimated)
	res = append(res, verdictRows(verdict, vin, m)...)
	return res, a.summary(m, durS, sutJ, nodeJ, evts, ujPerEvent, estimated, verdict), nil
}

// summary is the run.analyzed event of a run.
func (a *Analyzer) summary(m *events.RunMeasured, durS, sutJ, nodeJ float64, evts windowEvents, ujPerEvent float64, estimated bool,
	v Verdict) events.RunAnalyzed {
	return events.RunAnalyzed{ExperimentID: m.ExperimentID, RunID: m.RunID, DurationS: durS, EnergyJ: sutJ, NodeEnergyJ: nodeJ,
		MeanPowerW: sutJ / durS, Events: evts.count(), MicroJPerEvent: ujPerEvent, Estimated: estimated,
		Invalid: v.Invalid, Reason: v.Reason(), Flags: v.Flags, TsMs: a.now().UnixMilli()}
}

// verdictRows are the run-scope rows of the verdict: one flag_<name> row
// per flag, the load's delivery against the offer and the load
// generator's account.
func verdictRows(v Verdict, in VerdictInput, m *events.RunMeasured) []store.Result {
	row := func(metric string, value float64, unit string) store.Result {
		return store.Result{Scope: "run", Metric: metric, Value: value, Unit: unit}
	}
	out := []store.Result{
		row("invalid", b2f(v.Invalid), "bool"),
		row("events_from_broker", b2f(in.EventsFrom == EventsFromBroker), "bool"),
		row("events_from_progress_series", b2f(in.EventsFrom == EventsFromGenerator), "bool"),
		row("records_delivered", float64(m.RecordsDelivered), "1"),
		row("records_delivered_from_broker", b2f(m.DeliveredFromBroker), "bool"),
		row("records_missed", float64(m.RecordsMissed), "1"),
		row("records_backfilled", float64(m.RecordsBackfilled), "1"),
		row("load_takeovers", float64(m.LoadTakeovers), "1"),
		row("load_restarts", float64(m.LoadRestarts), "1"),
	}
	if in.OfferedRate > 0 {
		out = append(out, row("events_offered", in.OfferedRate*float64(in.WindowMs)/1000, "1"))
	}
	if !math.IsNaN(v.DeliveredRatio) {
		out = append(out, row("events_delivered_ratio", v.DeliveredRatio, "1"))
	}
	for _, f := range v.Flags {
		out = append(out, row(FlagMetricPrefix+f, 1, "bool"))
	}
	return out
}

// FlagMetricPrefix starts the name of a flag's result row.
const FlagMetricPrefix = "flag_"

// rolePeaks is each role's peak power in the window: the largest sum of its
// series' power at one sampling instant.
func (a *Analyzer) rolePeaks(ctx context.Context, nodes []string, m *events.RunMeasured, roles map[string]string) (map[string]float64, error) {
	ids := make([]string, 0, len(roles))
	for id := range roles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = roles[id]
	}
	// A sample written twice counts once: within a role and an instant, the
	// (series, power) pairs are taken as a set — a series being its scope,
	// target_id (which names the node for the unattributed rest) and source;
	// these scopes have no zone — hashed, which costs far less than a GROUP
	// BY on the sample key's strings (that one took 0.4 s of the one-hour
	// benchmark's analysis).
	q := expand(`SELECT role, max(w) FROM (
		SELECT role, ts_ms, arraySum(arraySort(arrayMap(x -> x.2, groupUniqArray((sk, power_w))))) AS w
		FROM (
		  SELECT if(scope = 'unattributed', 'unattributed', transform(target_id, ?, ?, 'other')) AS role, ts_ms, power_w,
		         cityHash64(scope, target_id, source) AS sk
		  FROM samples
		  WHERE has(?, node) AND scope IN ('process', 'pod', 'unattributed') AND ts_ms > {S} AND ts_ms - interval_ms < {E})
		GROUP BY role, ts_ms)
		GROUP BY role`, map[string]int64{"S": m.MeasureStartMs, "E": m.MeasureEndMs})
	rows, err := a.store.Conn().Query(ctx, q, ids, names, nodes)
	if err != nil {
		return nil, fmt.Errorf("query role peak power of run %s: %w", m.RunID, err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var r string
		var w float64
		if err := rows.Scan(&r, &w); err != nil {
			return nil, fmt.Errorf("scan role peak power: %w", err)
		}
		out[r] = w
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read role peak power: %w", err)
	}
	return out, nil
}
