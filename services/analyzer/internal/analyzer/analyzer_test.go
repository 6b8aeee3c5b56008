package analyzer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// t0 is an arbitrary epoch-ms origin for the fixtures.
const t0 = int64(1_760_000_000_000)

func newAnalyzer(t testing.TB, st *store.Store) *analyzer.Analyzer {
	t.Helper()
	a, err := analyzer.New(analyzer.Default(), analyzer.Deps{Store: st, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	return a
}

// parallelAnalyzer is an analyzer on a database of the test's own, the
// test marked parallel (see testenv.ParallelStore).
func parallelAnalyzer(t *testing.T) (*analyzer.Analyzer, *store.Store, context.Context) {
	t.Helper()
	st, ctx := testenv.ParallelStore(t)
	return newAnalyzer(t, st), st, ctx
}

// resultIndex indexes result rows by scope, subject and metric.
type resultIndex map[[3]string]store.Result

func index(rs []store.Result) resultIndex {
	out := resultIndex{}
	for _, r := range rs {
		out[[3]string{r.Scope, r.Subject, r.Metric}] = r
	}
	return out
}

func (r resultIndex) v(t *testing.T, scope, subject, metric string) float64 {
	t.Helper()
	x, ok := r[[3]string{scope, subject, metric}]
	require.True(t, ok, "result %s/%s/%s missing", scope, subject, metric)
	return x.Value
}

// want is one expected result value, within delta (0: exactly).
type want struct {
	scope, subject, metric string
	value, delta           float64
}

// expect checks every wanted value.
func (r resultIndex) expect(t *testing.T, ws []want) {
	t.Helper()
	for _, w := range ws {
		require.InDelta(t, w.value, r.v(t, w.scope, w.subject, w.metric), w.delta, "%s/%s/%s", w.scope, w.subject, w.metric)
	}
}

func (r resultIndex) has(scope, subject, metric string) bool {
	_, ok := r[[3]string{scope, subject, metric}]
	return ok
}

// counterSample builds a collector-style row from an interval's joules.
func counterSample(tsMs int64, node, scope, target string, deltaJ, cumJ float64, intervalMs uint32) store.Sample {
	return store.Sample{TsMs: tsMs, Node: node, Scope: scope, TargetID: target, Source: "rapl", PowerW: deltaJ / (float64(intervalMs) / 1000),
		EnergyJ: cumJ, DeltaJ: deltaJ, IntervalMs: intervalMs, Collector: "c1"}
}

// TestCounterWithWrapGapAndRestart feeds raw RAPL readings, one of which
// wraps, through energy.Counter as the collector does, drops two readings
// for a collector restart, splits every interval among roles, and checks
// the window's joules by hand:
//
//	raw µJ:  k0 262,137,000,000 (baseline)  k1 262,140,000,000 → 3 J
//	         k2 262,143,000,000 → 3 J       k3 1,671,150 → wrap: (R − k2) + k3 = 328,850 + 1,671,150 µJ = 2 J
//	         k4 5,671,150 → 4 J             restart: k5 none, k6 9,671,150 (new baseline)
//	         k7 13,671,150 → 4 J            k8 17,671,150 → 4 J
//	window [1.5 s, 7.5 s]: k2 half (1.5) + k3 (2) + k4 (4) + gap (4 s, 6 s] bridged at (4+4)/2 W (8)
//	                       + k7 (4) + k8 half (2) = 21.5 J
func TestCounterWithWrapGapAndRestart(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const maxRange = uint64(262_143_328_850)
	raw := []struct {
		k       int64
		uj      uint64
		restart bool
	}{
		{0, 262_137_000_000, false}, {1, 262_140_000_000, false}, {2, 262_143_000_000, false}, {3, 1_671_150, false}, {4, 5_671_150, false},
		{6, 9_671_150, true}, {7, 13_671_150, false}, {8, 17_671_150, false},
	}
	split := []struct {
		scope, target string
		share         float64
	}{
		{"process", "process/r1/sut-0", 0.5},
		{"process", "process/r1/broker-0", 0.2},
		{"process", "process/other-run/x", 0.1}, // measured on the node, not this run's
		{"unattributed", "node/n1", 0.2},
	}
	var c energy.Counter
	cum := map[string]float64{}
	var rows []store.Sample
	for _, r := range raw {
		if r.restart {
			c = energy.Counter{}
			cum = map[string]float64{}
		}
		d, ok := c.Update(r.uj, maxRange)
		if !ok {
			continue
		}
		ts := t0 + r.k*1000
		cum["node"] += d
		rows = append(rows, counterSample(ts, "n1", "node", "node/n1", d, cum["node"], 1000))
		for _, s := range split {
			cum[s.target] += d * s.share
			rows = append(rows, counterSample(ts, "n1", s.scope, s.target, d*s.share, cum[s.target], 1000))
		}
	}
	require.NoError(t, st.InsertSamples(ctx, rows))

	m := &events.RunMeasured{ExperimentID: "e1", RunID: "e1-r0000", ConfigHash: "c1", MeasureStartMs: t0 + 1500, MeasureEndMs: t0 + 7500,
		Targets: []events.Target{
			{ID: "process/r1/sut-0", Kind: "process", Node: "n1", Role: "sut"},
			{ID: "process/r1/broker-0", Kind: "process", Node: "n1", Role: "broker"},
		}, RecordsSent: 21500}
	res, sum, err := newAnalyzer(t, st).Analyze(ctx, m)
	require.NoError(t, err)
	r := index(res)
	const eps = 1e-9
	r.expect(t, []want{
		{"node", "n1", "energy_j", 21.5, eps},
		{"run", "", "node_energy_j", 21.5, eps},
		{"node", "n1", "mean_power_w", 21.5 / 6, eps},
		{"node", "n1", "peak_power_w", 4.0, eps},
		{"node", "n1", "samples", 5.0, eps},
		// Roles conserve the node total; the foreign process is "other".
		{"role", "sut", "energy_j", 10.75, eps},
		{"role", "broker", "energy_j", 4.3, eps},
		{"role", "other", "energy_j", 2.15, eps},
		{"role", "unattributed", "energy_j", 4.3, eps},
		{"role", "sut", "share_of_node_energy", 0.5, eps},
		{"target", "process/r1/sut-0", "energy_j", 10.75, eps},
	})
	require.False(t, r.has("target", "process/other-run/x", "energy_j"), "only the run's own targets get target rows")
	r.expect(t, []want{
		{"run", "", "sut_energy_j", 10.75, eps},
		{"run", "", "unattributed_energy_j", 4.3, eps},
		{"role", "sut", "peak_power_w", 2.0, eps}, // 0.5 × 4 W
		// Quality: one gap of 2 s bridged with 8 J, one restart, nothing
		// uncovered, a hardware counter, attribution conserved.
		{"run", "", "quality_sample_gaps", 1.0, 0},
		{"run", "", "quality_gap_s", 2.0, eps},
		{"run", "", "quality_bridged_energy_j", 8.0, eps},
		{"node", "n1", "quality_counter_resets", 1.0, 0},
		{"node", "n1", "integrated_from_power", 0.0, 0},
		{"node", "n1", "quality_mixed_sources", 0.0, 0},
		{"run", "", "quality_uncovered_s", 0.0, eps},
		{"run", "", "quality_estimated_source", 0.0, 0},
		{"run", "", "quality_attribution_residual_j", 0.0, eps},
		// No progress series: events fall back to the whole load's count.
		{"run", "", "events_from_progress_series", 0.0, 0},
		{"run", "", "sut_uj_per_event", 500.0, eps}, // 10.75 J / 21,500
	})
	require.InDelta(t, 10.75, sum.EnergyJ, eps)
	require.False(t, sum.Estimated)
	// No lag series, no byte source, no collector CPU: no fake verdicts.
	for _, metric := range []string{"lag_slo_ok", "lag_trend_slope", "lag_trend_points", "data_mb", "collector_cpu_seconds", "baseline_node_power_w"} {
		require.False(t, r.has("run", "", metric), metric)
	}
}

// TestPowerOnlySeriesTrapezoid integrates gauges (power only, no deltas):
//
//	n1: t 0..4 s, P 10, 20, 20, 40, 40 W; window [0.5 s, 3.5 s]
//	    (15+20)/2·0.5 + 20 + (20+40)/2 + 40·0.5 = 8.75 + 20 + 30 + 20 = 78.75 J
//	n2: t 0, 1, 4, 5 s, P 10, 10, 40, 40 W: the 3 s step is a gap, bridged
//	    linearly: 10·0.5 + (10 + 35)/2·2.5 = 5 + 56.25 = 61.25 J
func TestPowerOnlySeriesTrapezoid(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	gauge := func(node string, ts []int64, p []float64) []store.Sample {
		var out []store.Sample
		for i := range ts {
			out = append(out, store.Sample{TsMs: t0 + ts[i], Node: node, Scope: "node", TargetID: "node/" + node, Source: "scaphandre", PowerW: p[i],
				IntervalMs: 1000, Estimated: true, Collector: "scaph"})
		}
		return out
	}
	rows := append(gauge("n1", []int64{0, 1000, 2000, 3000, 4000}, []float64{10, 20, 20, 40, 40}),
		gauge("n2", []int64{0, 1000, 4000, 5000}, []float64{10, 10, 40, 40})...)
	require.NoError(t, st.InsertSamples(ctx, rows))
	m := &events.RunMeasured{ExperimentID: "e1", RunID: "e1-r0000", MeasureStartMs: t0 + 500, MeasureEndMs: t0 + 3500,
		Targets: []events.Target{{ID: "a", Kind: "process", Node: "n1"}, {ID: "b", Kind: "process", Node: "n2"}}}
	res, _, err := newAnalyzer(t, st).Analyze(ctx, m)
	require.NoError(t, err)
	r := index(res)
	const eps = 1e-9
	r.expect(t, []want{
		{"node", "n1", "energy_j", 78.75, eps},
		{"node", "n2", "energy_j", 61.25, eps},
		{"run", "", "node_energy_j", 140.0, eps},
		{"node", "n1", "peak_power_w", 40.0, eps},
		{"node", "n1", "quality_sample_gaps", 0.0, 0},
		{"node", "n2", "quality_sample_gaps", 1.0, 0},
		{"node", "n2", "quality_gap_s", 2.5, eps},
		{"node", "n2", "quality_bridged_energy_j", 56.25, eps},
		{"node", "n2", "quality_uncovered_s", 0.0, eps},
		{"node", "n1", "quality_estimated_source", 1.0, 0},
		{"node", "n1", "integrated_from_power", 1.0, 0},
		{"run", "", "quality_estimated_source", 2.0, 0},
	})
	require.True(t, r[[3]string{"run", "", "node_energy_j"}].Estimated)

	// A window reaching past the last sample is not extrapolated.
	m.MeasureStartMs, m.MeasureEndMs = t0+4500, t0+6500
	res, _, err = newAnalyzer(t, st).Analyze(ctx, m)
	require.NoError(t, err)
	r = index(res)
	require.InDelta(t, 20.0, r.v(t, "node", "n2", "energy_j"), eps) // 40 W over [4.5 s, 5 s]
	require.InDelta(t, 1.5, r.v(t, "node", "n2", "quality_uncovered_s"), eps)
}

// runFixture writes one run of the rich fixture: baseline [-10 s, 0] at
// 10 W node / 2 W SUT, window [0, 20 s] at nodeW / 15 W SUT, 1000 events/s,
// consumer lag growing by lagSlope msg/s and a collector using 0.02 cores.
func runFixture(t *testing.T, st *store.Store, runID, configHash string, offsetMs int64, nodeW, lagSlope float64) *events.RunMeasured {
	t.Helper()
	ctx := context.Background()
	base := t0 + offsetMs
	var rows []store.Sample
	cum := map[string]float64{}
	for k := int64(-9); k <= 20; k++ {
		ts := base + k*1000
		node, sut := 10.0, 2.0
		if k > 0 {
			node, sut = nodeW, 15
		}
		for _, s := range []struct {
			scope, target string
			j             float64
		}{{"node", "node/n1", node}, {"process", "process/" + runID + "/sut-0", sut}, {"unattributed", "node/n1", node - sut}} {
			cum[s.scope+s.target] += s.j
			x := counterSample(ts, "n1", s.scope, s.target, s.j, cum[s.scope+s.target], 1000)
			x.Source, x.Estimated = "model", true
			rows = append(rows, x)
		}
	}
	require.NoError(t, st.InsertSamples(ctx, rows))
	var pts []store.RunMetric
	for k := int64(-5); k <= 22; k++ {
		ts := base + k*1000
		sec := float64(k)
		pts = append(pts,
			store.RunMetric{ExperimentID: "e1", RunID: runID, TsMs: ts, Name: analyzer.MetricRecordsSent, Labels: `{"instance":"a"}`, Value: 1000 * (sec + 5)},
			store.RunMetric{ExperimentID: "e1", RunID: runID, TsMs: ts, Name: analyzer.MetricConsumerLag, Labels: `{"partition":"0"}`, Value: 100 + lagSlope*5/8*sec},
			store.RunMetric{ExperimentID: "e1", RunID: runID, TsMs: ts, Name: analyzer.MetricConsumerLag, Labels: `{"partition":"1"}`, Value: 200 + lagSlope*3/8*sec},
			store.RunMetric{ExperimentID: "e1", RunID: runID, TsMs: ts, Name: analyzer.MetricCollectorCPU, Labels: `{"instance":"c1"}`, Value: 0.02 * (sec + 10)},
		)
	}
	require.NoError(t, st.InsertRunMetrics(ctx, pts))
	cfg, err := json.Marshal(spec.RunConfig{Workload: spec.Workload{Sensors: 100, PeriodMs: 1000, Value: 10, Format: "avro", SchemaID: 1}})
	require.NoError(t, err)
	factors := map[string]string{"workload.sensors": "100"}
	fj, _ := json.Marshal(factors)
	require.NoError(t, st.UpsertRuns(ctx, []store.Run{{ExperimentID: "e1", RunID: runID, Config: string(cfg), ConfigHash: configHash, Factors: string(fj),
		State: events.RunStateAnalyzing, MeasureStartMs: base, MeasureEndMs: base + 20000}}))
	return &events.RunMeasured{ExperimentID: "e1", RunID: runID, ConfigHash: configHash, Factors: factors, MeasureStartMs: base, MeasureEndMs: base + 20000,
		BaselineStart: base - 10000, BaselineEnd: base, RecordsSent: 30000, OfferedRate: 1000,
		Targets: []events.Target{{ID: "process/" + runID + "/sut-0", Kind: "process", Node: "n1", Role: "sut"}}}
}

// TestDerivedMetrics checks events, energy per event and per MB, baseline
// and dynamic energy, the lag-trend verdict and the collector overhead.
//
// Record size (UC-3 Avro, 100 sensors): key "s_N" plus value 0x00, schema
// id (4), id length (1), id, timestamp varint (6 bytes at 1.76e12 ms),
// double (8) = 2·len(id) + 20; mean len(id) = (10·3 + 90·4)/100 = 3.9, so
// 27.8 bytes; 20,000 events = 0.556 MB.
func TestDerivedMetrics(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 80)
	res, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	r := index(res)
	const eps = 1e-9
	r.expect(t, []want{
		{"run", "", "node_energy_j", 600.0, eps},
		{"run", "", "sut_energy_j", 300.0, eps},
		{"run", "", "baseline_node_power_w", 10.0, eps},
		{"run", "", "dynamic_node_energy_j", 400.0, eps},
		{"run", "", "sut_baseline_power_w", 2.0, eps},
		{"run", "", "sut_dynamic_energy_j", 260.0, eps},
		{"node", "n1", "baseline_power_w", 10.0, eps},
		{"run", "", "events", 20000.0, eps},
		{"run", "", "events_from_progress_series", 1.0, 0},
		{"run", "", "throughput_eps", 1000.0, eps},
		{"run", "", "sut_uj_per_event", 15000.0, eps},
		{"run", "", "sut_dynamic_uj_per_event", 13000.0, eps},
		{"run", "", "events_per_joule", 20000.0 / 300, eps},
		{"run", "", "record_bytes_mean", 27.8, eps},
		{"run", "", "data_mb", 0.556, eps},
		{"run", "", "data_mb_from_workload", 1.0, 0},
		{"run", "", "sut_j_per_mb", 539.5683453237409, 1e-9},
		{"run", "", "lag_trend_slope", 80.0, 1e-9},
		{"run", "", "lag_trend_points", 21.0, 0}, // every second of [0, 20 s]
		{"run", "", "lag_slo_ok", 1.0, 0},
		{"run", "", "collector_cpu_seconds", 0.4, eps},
		{"run", "", "collector_cpu_cores", 0.02, eps},
		{"run", "", "quality_estimated_source", 1.0, 0},
	})
	require.True(t, sum.Estimated)

	steep := runFixture(t, st, "e1-r0001", "c2", 100_000, 30, 3000)
	res, _, err = a.Analyze(ctx, steep)
	require.NoError(t, err)
	r = index(res)
	require.InDelta(t, 3000.0, r.v(t, "run", "", "lag_trend_slope"), 1e-9)
	require.Equal(t, 0.0, r.v(t, "run", "", "lag_slo_ok"))
}

func TestMeanRecordBytes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		w    spec.Workload
		want float64
	}{
		{"avro 100 sensors", spec.Workload{Sensors: 100, Format: "avro", Value: 10}, 27.8},
		{"avro 10 sensors", spec.Workload{Sensors: 10, Format: "avro", Value: 10}, 26},
		{"avro 1000 sensors", spec.Workload{Sensors: 1000, Format: "avro", Value: 10}, 20 + 2*(10*3+90*4+900*5)/1000.0},
		// key "s_0" (3) + {"identifier":"s_0","timestamp":1760000000000,"valueInW":10} (60)
		{"json 1 sensor", spec.Workload{Sensors: 1, Format: "json", Value: 10}, 3 + 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := analyzer.MeanRecordBytes(tc.w, t0)
			require.True(t, ok)
			require.InDelta(t, tc.want, got, 1e-12)
		})
	}
	_, ok := analyzer.MeanRecordBytes(spec.Workload{Sensors: 1, Format: "protobuf"}, t0)
	require.False(t, ok)
}

// TestReanalysisAndConfigSummary analyses three repetitions of one
// configuration (node at 30, 36 and 24 W → 600, 720, 480 J), re-analyses
// one, and checks the stored rows are identical, the configuration's
// statistics are right and the HTTP API serves them.
func TestReanalysisAndConfigSummary(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	var runs []*events.RunMeasured
	for i, w := range []float64{30, 36, 24} {
		m := runFixture(t, st, "e1-r000"+string(rune('0'+i)), "c1", int64(i)*100_000, w, 80)
		_, err := a.AnalyzeAndStore(ctx, m)
		require.NoError(t, err)
		runs = append(runs, m)
	}
	before, err := st.Results(ctx, "e1")
	require.NoError(t, err)
	sumBefore, err := st.ConfigResults(ctx, "e1")
	require.NoError(t, err)
	_, err = a.AnalyzeAndStore(ctx, runs[1])
	require.NoError(t, err)
	after, err := st.Results(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, before, after, "re-analysis gives identical rows")
	sumAfter, err := st.ConfigResults(ctx, "e1")
	require.NoError(t, err)
	require.Len(t, sumAfter, len(sumBefore))
	for i := range sumBefore {
		require.Equal(t, sumBefore[i].Metric, sumAfter[i].Metric)
		require.Equal(t, sumBefore[i].Mean, sumAfter[i].Mean)
	}

	by := map[string]store.ConfigResult{}
	for _, s := range sumAfter {
		by[s.Metric] = s
	}
	ne := by["node_energy_j"]
	require.Equal(t, 3, ne.N)
	require.InDelta(t, 600.0, ne.Mean, 1e-9)
	require.InDelta(t, 120.0, ne.SD, 1e-9)
	require.InDelta(t, 0.2, ne.CV, 1e-12)
	require.InDelta(t, 600-298.0965254100396, ne.CILow, 1e-6) // t(0.975, 2)·120/√3
	require.True(t, ne.CVFlag, "CV 20 %% > 10 %%")
	require.Equal(t, []string{"e1-r0000", "e1-r0001", "e1-r0002"}, ne.RunIDs)
	require.False(t, by["sut_energy_j"].CVFlag, "SUT energy is the same in every repetition")
	require.Equal(t, 1.0, by[results.LagSLOOKMedianSlope].Mean)

	srv := resultsServer(t, st)
	resp, err := srv.get(t, srv.URL+"/v1/experiments/e1/results")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc struct {
		Runs []struct {
			RunID   string             `json:"run_id"`
			Metrics map[string]float64 `json:"metrics"`
			Details []struct{ Scope string }
		} `json:"runs"`
		Configs []struct {
			ConfigHash string `json:"config_hash"`
			Metrics    map[string]struct {
				N     int      `json:"n"`
				Mean  float64  `json:"mean"`
				CILow *float64 `json:"ci_low"`
			} `json:"metrics"`
			CVFlagged []string `json:"cv_flagged"`
			Pareto    bool     `json:"pareto_optimal"`
		} `json:"configs"`
		ParetoFront []string `json:"pareto_front"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	require.Len(t, doc.Runs, 3)
	require.InDelta(t, 720.0, doc.Runs[1].Metrics["node_energy_j"], 1e-9)
	require.NotEmpty(t, doc.Runs[0].Details)
	require.Len(t, doc.Configs, 1)
	require.Equal(t, 3, doc.Configs[0].Metrics["node_energy_j"].N)
	require.NotNil(t, doc.Configs[0].Metrics["node_energy_j"].CILow)
	require.Contains(t, doc.Configs[0].CVFlagged, "node_energy_j")
	require.Equal(t, []string{"c1"}, doc.ParetoFront)

	resp2, err := srv.get(t, srv.URL+"/v1/experiments/nope/results")
	require.NoError(t, err)
	resp2.Body.Close()
	require.Equal(t, http.StatusNotFound, resp2.StatusCode)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, analyzer.Default().Validate())
	bad := analyzer.Default()
	bad.LagThreshold, bad.ConfidenceLevel, bad.LagStep = 0, 1, time.Millisecond
	err := bad.Validate()
	require.ErrorContains(t, err, "analyzer.lagThreshold")
	require.ErrorContains(t, err, "analyzer.confidenceLevel")
	require.ErrorContains(t, err, "analyzer.lagStep")
}
