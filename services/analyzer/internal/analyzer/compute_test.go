package analyzer_test

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// counter is the figures of a counter-backed series covering the whole
// window [0, 10 s] with joules in it.
func counter(scope, target, node string, joules float64) store.SeriesWindow {
	return store.SeriesWindow{Scope: scope, TargetID: target, Node: node, Sources: []string{"model"}, Estimated: true, Samples: 10,
		PeakW: joules / 10, MaxIntervalMs: 1000, CounterJ: joules, CoveredMs: 10_000}
}

// richInputs is a run that reaches every branch of Compute: a counter node
// with a bridged gap and a zone, a gauge node, two targets and a foreign
// process, the unattributed rest, a baseline, the broker's and the
// generators' counts (a surplus, which makes it invalid), a stretched
// sample, a pod no meter sees, late samples, the
// load generator's recoveries and a second off the offered rate, a lag series, the collectors' CPU and the
// workload — all on the utilisation model (estimated).
func richInputs() analyzer.Inputs {
	m := &events.RunMeasured{ExperimentID: "e", RunID: "e-r0000", MeasureStartMs: t0, MeasureEndMs: t0 + 10_000, BaselineStart: t0 - 5000,
		BaselineEnd: t0, OfferedRate: 100, RecordsSent: 1200, RecordsDelivered: 1200, DeliveredFromBroker: true, LoadTakeovers: 1,
		LoadRestarts: 1, RecordsBackfilled: 5, RecordsMissed: 3,
		Targets: []events.Target{{ID: "process/sut", Kind: "process", Node: "n1"}, {ID: "process/broker", Kind: "process", Node: "n1", Role: "broker"},
			{ID: "pod/ns/p/c", Kind: "pod", Node: "n2", Role: "sut"}}}
	n1 := counter("node", "node/n1", "n1", 100)
	n1.Gaps, n1.GapMs, n1.MaxGapMs, n1.CounterBridgedJ, n1.CoveredMs, n1.Resets = 1, 1000, 1000, 10, 9000, 1
	n1.MedianIntervalMs, n1.Stretches, n1.StretchMs, n1.MaxStretchMs = 1000, 1, 500, 500
	zone := counter("zone", "node/n1", "n1", 80)
	zone.Zone = "package"
	n2 := store.SeriesWindow{Scope: "node", TargetID: "node/n2", Node: "n2", Sources: []string{"kepler", "model"}, Estimated: true, PowerOnly: true,
		Samples: 10, PeakW: 5, MaxIntervalMs: 1000, TrapzJ: 50, GaugeSpanMs: 10_000}
	window := []store.SeriesWindow{n1, zone, n2, counter("process", "process/sut", "n1", 40), counter("process", "process/broker", "n1", 20),
		counter("process", "process/foreign", "n1", 10), counter("unattributed", "node/n1", "n1", 40)}
	var baseline []store.SeriesWindow
	for _, s := range window {
		s.CounterJ, s.CounterBridgedJ, s.TrapzJ = s.CounterJ/4, 0, s.TrapzJ/4
		if s.TargetID == "process/broker" {
			s.CounterJ = 15 // 3 W at idle against 2 W in the window: a negative dynamic energy
		}
		baseline = append(baseline, s)
	}
	cumulative := func(perS float64) map[string][]store.Point {
		var pts []store.Point
		for k := int64(-2); k <= 12; k++ {
			pts = append(pts, store.Point{TsMs: t0 + k*1000, Value: perS * float64(k+2)})
		}
		return map[string][]store.Point{`{"instance":"a"}`: pts}
	}
	lag := map[string][]store.Point{}
	for k := int64(0); k <= 10; k++ {
		// 10 msg/s, ±1 alternating (no effect on the slope, a standard
		// error of about 0.1 msg/s: the spec's 10.1 msg/s is within it).
		lag[`{"partition":"0"}`] = append(lag[`{"partition":"0"}`], store.Point{TsMs: t0 + k*1000, Value: 10*float64(k) + float64(1-2*(k%2))})
	}
	return analyzer.Inputs{Run: m, Window: window, Baseline: baseline,
		RolePeaks: map[string]float64{results.RoleSUT: 4, "broker": 2, results.RoleOther: 1, results.RoleUnattributed: 4},
		Pending: analyzer.Pending{Nodes: []string{"n2"}, Late: []analyzer.LateSeries{{Kind: "node", Name: "n1", Source: "model", ShortMs: 700},
			{Kind: "target", Name: "process/sut", Source: "model", ShortMs: 300}}}, HighWatermark: cumulative(120), RecordsSent: cumulative(118), ConsumerLag: lag, LagSLO: analyzer.LagSLO{Threshold: 10.1, FromSpec: true},
		CollectorCPU: cumulative(0.02), Workload: &spec.Workload{Sensors: 10, Format: "avro", Value: 10}, NowMs: t0 + 20_000,
		Gaps: []store.Gap{{Node: "n1", Source: "model", FromMs: t0 + 2000, ToMs: t0 + 3000, Samples: 1, Reason: store.GapSpoolFull},
			{Node: "n2", Source: "kepler", FromMs: t0 + 5000, ToMs: t0 + 5500, Samples: 1, Reason: store.GapImplausible}},
		LoadRate: kafkasignals.Deviation{Checked: 10, Deviating: 1},
		Meters:   []store.RunMeter{{RunID: "e-r0000", Node: "n2", AskedSource: "rapl", Meter: "model", Estimated: true}}}
}

// surplusReason is richInputs' verdict: 120 events/s at the broker against
// 100 offered.
const surplusReason = "more load than offered in the measured window: 1200 of 1000 events (120.0%; tolerance 2.0% + 200ms of load) by " +
	"the input topic's high-water marks — a catch-up or back-fill measured a load the spec did not ask for"

// The analyzer writes exactly the result metrics pkg/results lists for it,
// in their scopes, with their units, estimated exactly when they can be:
// a metric the table lacks, or one it lists that the analyzer never
// writes, fails this test.
func TestComputeWritesExactlyTheTable(t *testing.T) {
	t.Parallel()
	in := richInputs()
	in.WindowBySource = n2BySource(60, 10_000, 50, 10_000) // two meters at once: the cross-meter rows
	rows, sum := analyzer.Compute(in, analyzer.Default())
	require.Equal(t, surplusReason, sum.Reason, "the surplus is the only reason")
	require.Equal(t, []string{results.FlagDynamicEnergyNegative, results.FlagEnergyImplausible, results.FlagEnergyGapBridged, results.FlagEnergyGapRecorded, results.FlagLagVerdictUnresolved, results.FlagLoadBackfilled, results.FlagLoadMissed, results.FlagLoadRateDeviation, results.FlagLoadRestart,
		results.FlagLoadSurplus, results.FlagLoadTakeover, results.FlagMeterFallback, results.FlagSamplesLate, results.FlagSamplesStretched, results.FlagTargetUnmeasured},
		sum.Flags, "every flag")

	written := map[[2]string]bool{}
	for _, r := range rows {
		m, ok := results.Lookup(r.Metric)
		require.True(t, ok, "the analyzer writes %s, which pkg/results lacks", r.Metric)
		require.Equal(t, results.ProducerAnalyzer, m.Producer, r.Metric)
		require.True(t, m.In(r.Scope), "%s written in scope %s, declared in %v", r.Metric, r.Scope, m.Scopes)
		require.Equal(t, m.Unit, r.Unit, r.Metric)
		require.Equal(t, m.Estimable, r.Estimated, "%s/%s: every figure of this run is from the model", r.Scope, r.Metric)
		written[[2]string{r.Scope, r.Metric}] = true
	}
	// lag_not_evaluated excludes lag_verdict_unresolved: a window with too
	// few lag samples (two) gives it.
	few := richInputs()
	few.ConsumerLag = map[string][]store.Point{`{"partition":"0"}`: few.ConsumerLag[`{"partition":"0"}`][9:]}
	fewRows, fewSum := analyzer.Compute(few, analyzer.Default())
	require.Contains(t, fewSum.Flags, results.FlagLagNotEvaluated)
	for _, r := range fewRows {
		if r.Metric == results.FlagMetric(results.FlagLagNotEvaluated) {
			written[[2]string{r.Scope, r.Metric}] = true
		}
	}
	// lag_slo_failed: the same lag against a threshold far below it (a SUT
	// that fell behind, resolved).
	behind := richInputs()
	behind.LagSLO.Threshold = 1
	behindRows, behindSum := analyzer.Compute(behind, analyzer.Default())
	require.Contains(t, behindSum.Flags, results.FlagLagSLOFailed)
	require.NotContains(t, behindSum.Flags, results.FlagLagVerdictUnresolved)
	require.NotContains(t, sum.Flags, results.FlagLagSLOFailed, "unresolved is not failed")
	for _, r := range behindRows {
		if r.Metric == results.FlagMetric(results.FlagLagSLOFailed) {
			written[[2]string{r.Scope, r.Metric}] = true
		}
	}
	// The wattmeter–RAPL residual: n2 measured at once by RAPL and a
	// wattmeter (hardware, not estimated) instead of kepler and the model.
	metered := richInputs()
	metered.WindowBySource = n2BySource(60, 10_000, 50, 10_000)
	for i, src := range []string{"rapl", "wattmeter"} {
		metered.WindowBySource[i].Sources, metered.WindowBySource[i].Estimated = []string{src}, false
	}
	meteredRows, _ := analyzer.Compute(metered, analyzer.Default())
	for _, r := range meteredRows {
		if r.Metric == results.QualityWattmeterRAPLResidualJ || r.Metric == results.QualityWattmeterRAPLResidualPct {
			m, _ := results.Lookup(r.Metric)
			require.True(t, m.In(r.Scope), "%s written in scope %s, declared in %v", r.Metric, r.Scope, m.Scopes)
			require.False(t, r.Estimated, r.Metric)
			written[[2]string{r.Scope, r.Metric}] = true
		}
	}
	var runRows []store.Result
	for _, r := range rows {
		if r.Scope == results.ScopeRun {
			r.RunID = in.Run.RunID
			runRows = append(runRows, r)
		}
	}
	for _, c := range analyzer.SummarizeConfig("c", "{}", runRows, analyzer.Default()) {
		if _, ok := written[[2]string{results.ScopeRun, c.Metric}]; !ok {
			written[[2]string{results.ScopeConfig, c.Metric}] = true
		}
	}
	for _, m := range results.All() {
		if m.Producer != results.ProducerAnalyzer {
			continue
		}
		for _, s := range m.Scopes {
			require.True(t, written[[2]string{s, m.Name}], "pkg/results lists %s in scope %s, which the analyzer never writes", m.Name, s)
		}
	}
}

// TestCompute checks the pure core's arithmetic and branches on inputs made
// by hand.
func TestCompute(t *testing.T) {
	t.Parallel()
	const eps = 1e-9
	for _, tc := range []struct {
		name  string
		mod   func(*analyzer.Inputs)
		check func(t *testing.T, r resultIndex, sum events.RunAnalyzed)
	}{
		{name: "attribution and the window's figures", mod: func(*analyzer.Inputs) {}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			require.InDelta(t, 110.0, r.v(t, "node", "n1", results.EnergyJ), eps, "counter deltas plus the bridged gap")
			require.InDelta(t, 50.0, r.v(t, "node", "n2", results.EnergyJ), eps, "the gauge's trapezoid")
			require.InDelta(t, 160.0, r.v(t, "run", "", results.NodeEnergyJ), eps)
			require.InDelta(t, 40.0, r.v(t, "run", "", results.SUTEnergyJ), eps)
			require.InDelta(t, 10.0, r.v(t, "role", results.RoleOther, results.EnergyJ), eps, "the foreign process")
			require.InDelta(t, 0.25, r.v(t, "role", results.RoleSUT, results.ShareOfNodeEnergy), eps)
			require.InDelta(t, 80.0, r.v(t, "zone", "n1/package", results.EnergyJ), eps)
			require.InDelta(t, 0.0, r.v(t, "node", "n1", results.QualityAttributionResidualJ), eps, "parts add up to the node")
			require.InDelta(t, 50.0, r.v(t, "node", "n2", results.QualityAttributionResidualJ), eps, "n2's energy went to no part")
			require.Equal(t, 1.0, r.v(t, "node", "n2", results.IntegratedFromPower))
			require.Equal(t, 1.0, r.v(t, "node", "n2", results.QualityMixedSources))
			require.Equal(t, 2.0, r.v(t, "run", "", results.QualityEstimatedSource))
			// Baseline: a quarter of each series' window energy over 5 s.
			require.InDelta(t, 40.0/4/5, r.v(t, "run", "", results.SUTBaselinePowerW), eps)
			require.InDelta(t, 40-40.0/4/5*10, r.v(t, "run", "", results.SUTDynamicEnergyJ), eps)
			// Events at the broker: 120/s over 10 s, against 100/s offered.
			require.InDelta(t, 1200.0, r.v(t, "run", "", results.Events), eps)
			require.Equal(t, 1.0, r.v(t, "run", "", results.EventsFromBroker))
			require.InDelta(t, 1180.0, r.v(t, "run", "", results.EventsAcknowledged), eps)
			require.InDelta(t, 1.2, r.v(t, "run", "", results.EventsDeliveredRatio), eps)
			require.InDelta(t, 40.0/1200*1e6, r.v(t, "run", "", results.SUTMicroJPerEvent), eps)
			require.InDelta(t, 10.0, r.v(t, "run", "", results.LagTrendSlope), eps)
			require.InDelta(t, 0.2, r.v(t, "run", "", results.CollectorCPUSeconds), eps)
			require.InDelta(t, 4.0, r.v(t, "run", "", results.SUTPeakPowerW), eps, "the role's peak from the store")
			require.Equal(t, events.RunAnalyzed{ExperimentID: "e", RunID: "e-r0000", DurationS: 10, EnergyJ: 40, NodeEnergyJ: 160, MeanPowerW: 4,
				Events: 1200, MicroJPerEvent: 40.0 / 1200 * 1e6, Estimated: true, Invalid: true, Reason: surplusReason, Flags: sum.Flags,
				TsMs: t0 + 20_000}, sum)
		}},
		{name: "no energy in the window: the verdict is all there is", mod: func(in *analyzer.Inputs) { in.Window = nil },
			check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
				require.True(t, sum.Invalid)
				require.Contains(t, sum.Reason, "no energy samples for node n1 in the measured window")
				require.InDelta(t, 10.0, r.v(t, "run", "", results.DurationS), eps)
				require.Equal(t, 1.0, r.v(t, "run", "", results.Invalid))
				require.False(t, r.has("run", "", results.NodeEnergyJ))
				require.False(t, sum.Estimated)
				for k := range r {
					if k[2] != results.QualityLateS { // what was still missing is said wherever it was
						require.Equal(t, results.ScopeRun, k[0], "no detail rows: %v", k)
					}
				}
				require.Equal(t, 0.7, r.v(t, "node", "n1", results.QualityLateS))
			}},
		{name: "node below its own baseline: negative dynamic energy flagged", mod: func(in *analyzer.Inputs) {
			in.Baseline[0].CounterJ = 60 // n1 at 12 W idle, 10 W under load
		}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			require.InDelta(t, 110.0-120.0, r.v(t, "node", "n1", results.DynamicEnergyJ), eps, "110 J (10 bridged) against 12 W × 10 s: kept as measured")
			require.Contains(t, sum.Flags, results.FlagDynamicEnergyNegative)
			require.Equal(t, 1.0, r.v(t, "run", "", results.FlagMetric(results.FlagDynamicEnergyNegative)))
		}},
		{name: "a node at exactly its baseline: rounding below zero is not flagged", mod: func(in *analyzer.Inputs) {
			in.Baseline[0].CounterJ = 55.000000000005 // 11 W idle and 11 W loaded, but for the last bits
			for i, b := range in.Baseline {
				if b.TargetID == "process/broker" {
					in.Baseline[i].CounterJ = 5 // the fixture's other negative figure: 1 W idle, 2 W loaded
				}
			}
		}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			dyn := r.v(t, "node", "n1", results.DynamicEnergyJ)
			require.Less(t, dyn, 0.0, "the subtraction does come out below zero")
			require.InDelta(t, 0.0, dyn, 1e-9)
			require.NotContains(t, sum.Flags, results.FlagDynamicEnergyNegative, "rounding is not a negative dynamic energy")
		}},
		{name: "the unattributed rest below its baseline is displacement, not flagged", mod: func(in *analyzer.Inputs) {
			for i, b := range in.Baseline {
				switch {
				case b.TargetID == "process/broker":
					in.Baseline[i].CounterJ = 5 // 1 W idle, 2 W loaded
				case b.Scope == "unattributed":
					in.Baseline[i].CounterJ = 25 // 5 W idle, 4 W loaded: the SUT took its share
				}
			}
		}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			require.Less(t, r.v(t, "role", results.RoleUnattributed, results.DynamicEnergyJ), 0.0)
			require.NotContains(t, sum.Flags, results.FlagDynamicEnergyNegative)
		}},
		{name: "no baseline, no baseline rows", mod: func(in *analyzer.Inputs) {
			in.Run.BaselineStart, in.Run.BaselineEnd, in.Baseline = 0, 0, nil
		}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			require.NotContains(t, sum.Flags, results.FlagDynamicEnergyNegative, "no dynamic figures, nothing negative")
			for _, m := range []string{results.BaselineNodePowerW, results.SUTDynamicEnergyJ, results.SUTDynamicMicroJPerEvent} {
				require.False(t, r.has("run", "", m), m)
			}
			require.False(t, r.has("node", "n1", results.BaselinePowerW))
		}},
		{name: "too few lag points: no slope, no verdict", mod: func(in *analyzer.Inputs) {
			for k, pts := range in.ConsumerLag {
				in.ConsumerLag[k] = pts[len(pts)-1:]
			}
		}, check: func(t *testing.T, r resultIndex, _ events.RunAnalyzed) {
			require.Equal(t, 1.0, r.v(t, "run", "", results.LagTrendPoints), "only the last instant has a value")
			require.False(t, r.has("run", "", results.LagTrendSlope))
			require.False(t, r.has("run", "", results.LagSLOOK))
		}},
		{name: "no broker series: the generators' count", mod: func(in *analyzer.Inputs) { in.HighWatermark = nil },
			check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
				require.Equal(t, 1.0, r.v(t, "run", "", results.EventsFromProgressSeries))
				require.Equal(t, int64(1180), sum.Events)
			}},
		{name: "hardware counters: nothing estimated", mod: func(in *analyzer.Inputs) {
			for i := range in.Window {
				in.Window[i].Estimated = false
			}
		}, check: func(t *testing.T, r resultIndex, sum events.RunAnalyzed) {
			require.False(t, sum.Estimated)
			for k, x := range r {
				require.False(t, x.Estimated, "%v", k)
			}
		}},
		{name: "a target sampled during the run but not in the window is lost", mod: func(in *analyzer.Inputs) {
			in.SampledTargets = []string{"pod/ns/p/c"}
		}, check: func(t *testing.T, _ resultIndex, sum events.RunAnalyzed) {
			require.True(t, sum.Invalid)
			require.Contains(t, sum.Reason, "target pod/ns/p/c was measured during the run but not in the measured window")
			require.NotContains(t, sum.Flags, results.FlagTargetUnmeasured)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := richInputs()
			tc.mod(&in)
			rows, sum := analyzer.Compute(in, analyzer.Default())
			tc.check(t, index(rows), sum)
			again, sum2 := analyzer.Compute(in, analyzer.Default())
			require.Equal(t, rows, again, "pure: the same inputs, the same rows")
			require.Equal(t, sum, sum2)
			require.False(t, slices.ContainsFunc(rows, func(r store.Result) bool { return r.Unit == "" }))
		})
	}
}
