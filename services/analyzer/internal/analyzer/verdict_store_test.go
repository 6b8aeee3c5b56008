package analyzer_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// verdictRun describes one stored run of TestVerdictOnStoredRuns: a 20 s
// window at 1000 msg/s offered, sampled every second from 5 s before to 5 s
// after it, node 10 W of which the SUT draws 4 W.
type verdictRun struct {
	skip       map[int64]bool // seconds with no sample at all (a lost batch)
	targetTill int64          // the SUT's last sample (second); 0 = to the end
	brokerRate float64        // the input topic grows by this per second in the window
	noBroker   bool           // no kafka_input_high_watermark series
	twice      bool           // every sample and point written twice
	// stretch: the collector read nothing after second stretch[0] until
	// second stretch[1], whose sample spans the whole time (its counter
	// delta is the energy of all of it).
	stretch [2]int64
	// second: another collector reads the same meter, its samples 500 ms
	// after the first's (two collectors on one machine).
	second  bool
	account func(*events.RunMeasured)
}

func (v verdictRun) store(t *testing.T, st *store.Store, runID string, offsetMs int64) *events.RunMeasured {
	t.Helper()
	ctx := context.Background()
	base := t0 + offsetMs
	node := "n-" + runID
	sut := "process/" + runID + "/sut-0"
	var rows []store.Sample
	cum := map[string]float64{}
	for k := int64(-5); k <= 25; k++ {
		if v.skip[k] || (v.stretch[1] > 0 && k > v.stretch[0] && k < v.stretch[1]) {
			continue
		}
		secs := int64(1)
		if v.stretch[1] > 0 && k == v.stretch[1] {
			secs = v.stretch[1] - v.stretch[0]
		}
		for _, s := range []struct {
			scope, target string
			j             float64
		}{{"node", "node/" + node, 10}, {"process", sut, 4}, {"unattributed", "node/" + node, 6}} {
			if s.scope == "process" && v.targetTill != 0 && k > v.targetTill {
				continue
			}
			cum[s.scope] += s.j * float64(secs)
			rows = append(rows, counterSample(base+k*1000, node, s.scope, s.target, s.j*float64(secs), cum[s.scope], uint32(secs*1000)))
			if v.second {
				x := counterSample(base+k*1000+500, node, s.scope, s.target, s.j, cum[s.scope], 1000)
				x.Collector = "c2"
				rows = append(rows, x)
			}
		}
	}
	var pts []store.RunMetric
	brokerRate := v.brokerRate
	if brokerRate == 0 {
		brokerRate = 1000
	}
	// The topic's high-water mark at s seconds from the window start: 1000/s
	// outside the window, brokerRate inside; sampled 137 ms off the second,
	// so the edges are interpolated.
	hwm := func(s float64) float64 {
		switch {
		case s <= 0:
			return 1000 * (s + 5)
		case s <= 20:
			return 5000 + brokerRate*s
		}
		return 5000 + 20*brokerRate + 1000*(s-20)
	}
	for k := int64(-5); k <= 25; k++ {
		ts := base + k*1000
		pts = append(pts, store.RunMetric{ExperimentID: "ev", RunID: runID, TsMs: ts, Name: analyzer.MetricRecordsSent, Labels: `{"instance":"a"}`,
			Value: 1000 * float64(k+5)})
		if !v.noBroker {
			pts = append(pts, store.RunMetric{ExperimentID: "ev", RunID: runID, TsMs: ts + 137, Name: analyzer.MetricInputHighWatermark,
				Labels: `{"topic":"input-` + runID + `"}`, Value: hwm(float64(k) + 0.137)})
		}
	}
	if v.twice {
		rows = append(rows, rows...)
		pts = append(pts, pts...)
	}
	require.NoError(t, st.InsertSamples(ctx, rows))
	require.NoError(t, st.InsertRunMetrics(ctx, pts))
	m := &events.RunMeasured{ExperimentID: "ev", RunID: runID, ConfigHash: "c-" + runID, MeasureStartMs: base, MeasureEndMs: base + 20_000,
		OfferedRate: 1000, RecordsSent: 30_000, RecordsDelivered: 30_000, DeliveredFromBroker: true,
		Targets: []events.Target{{ID: sut, Kind: "process", Node: node, Role: "sut"}}}
	if v.account != nil {
		v.account(m)
	}
	return m
}

// TestVerdictOnStoredRuns analyses runs stored in ClickHouse whose samples
// have gaps within and beyond the bound, whose load fell short of the
// offer, whose SUT stopped being measured, and whose rows were all written
// twice, and checks each verdict, its flags and its result rows.
func TestVerdictOnStoredRuns(t *testing.T) {
	a, st, ctx := parallelAnalyzer(t)
	for i, tc := range []struct {
		name     string
		run      verdictRun
		invalid  string // substring of the reason; "" = valid
		flags    []string
		events   float64
		eventsΔ  float64 // linear interpolation across the rate's change at an edge errs by up to this
		from     string
		nodeJ    float64
		checkRow func(t *testing.T, r resultIndex)
	}{
		{name: "clean", events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 200},
		{name: "every row twice counts once", run: verdictRun{twice: true}, events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 200},
		{name: "2 s gap bridged", run: verdictRun{skip: map[int64]bool{5: true, 6: true}}, events: 20_000, from: analyzer.EventsFromBroker,
			nodeJ: 200, flags: []string{results.FlagEnergyGapBridged}, checkRow: func(t *testing.T, r resultIndex) {
				require.Equal(t, 1.0, r.v(t, "run", "", results.FlagPrefix+results.FlagEnergyGapBridged))
				require.InDelta(t, 2.0, r.v(t, "run", "", "quality_gap_s"), 1e-9)
				require.InDelta(t, 20.0, r.v(t, "run", "", "quality_bridged_energy_j"), 1e-9) // 2 s at 10 W
			}},
		{name: "5 s gap beyond the bound", run: verdictRun{skip: map[int64]bool{5: true, 6: true, 7: true, 8: true, 9: true}}, events: 20_000,
			from: analyzer.EventsFromBroker, nodeJ: 200, invalid: "missing for 5.0 s (bridging bound 3.0 s)"},
		{name: "load 10 % short at the broker", run: verdictRun{brokerRate: 900}, events: 18_000, eventsΔ: 30, from: analyzer.EventsFromBroker, nodeJ: 200,
			invalid: "offered load not delivered in the measured window: 180"},
		{name: "catch-up surplus", run: verdictRun{brokerRate: 1100}, events: 22_000, eventsΔ: 30, from: analyzer.EventsFromBroker, nodeJ: 200,
			flags: []string{results.FlagLoadSurplus}, invalid: "more load than offered in the measured window: 21976 of 20000 events (109.9%"},
		{name: "no broker series: the generators' count", run: verdictRun{noBroker: true}, events: 20_000, from: analyzer.EventsFromGenerator, nodeJ: 200},
		// Its source never reaches the window end: analysed without waiting
		// (Analyze), the run is also flagged samples_late.
		{name: "SUT stops being measured mid-window", run: verdictRun{targetTill: 12}, events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 200,
			flags: []string{results.FlagSamplesLate}, invalid: "energy samples of target process/ev-r0007/sut-0 cover 8.0 s less than the measured window"},
		{name: "the load generator's account", run: verdictRun{account: func(m *events.RunMeasured) {
			m.LoadTakeovers, m.LoadRestarts, m.RecordsBackfilled, m.RecordsMissed = 1, 1, 2500, 3
		}}, events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 200,
			flags: []string{results.FlagLoadBackfilled, results.FlagLoadMissed, results.FlagLoadRestart, results.FlagLoadTakeover},
			checkRow: func(t *testing.T, r resultIndex) {
				require.Equal(t, 2500.0, r.v(t, "run", "", "records_backfilled"))
				require.Equal(t, 3.0, r.v(t, "run", "", "records_missed"))
				require.Equal(t, 1.0, r.v(t, "run", "", "load_takeovers"))
				require.Equal(t, 1.0, r.v(t, "run", "", "load_restarts"))
				require.Equal(t, 1.0, r.v(t, "run", "", results.FlagPrefix+results.FlagLoadMissed))
			}},
		{name: "2 s stretched sample flagged", run: verdictRun{stretch: [2]int64{4, 7}}, events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 200,
			flags: []string{results.FlagSamplesStretched}},
		{name: "8 s stretched sample: the meter went unread", run: verdictRun{stretch: [2]int64{4, 12}}, events: 20_000, from: analyzer.EventsFromBroker,
			nodeJ: 200, invalid: "one sample spans 7.0 s beyond the usual 1.0 s interval"},
		// Both collectors' samples add up: the energy is doubled, and the
		// run must not pass.
		{name: "two collectors on one meter", run: verdictRun{second: true}, events: 20_000, from: analyzer.EventsFromBroker, nodeJ: 400,
			invalid: "cover 20.0 s of the window twice (collectors c1, c2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runID := "ev-r000" + string(rune('0'+i))
			m := tc.run.store(t, st, runID, int64(i)*1_000_000)
			res, sum, err := a.Analyze(ctx, m)
			require.NoError(t, err)
			r := index(res)
			require.Equal(t, tc.invalid != "", sum.Invalid, "reason: %s", sum.Reason)
			require.Contains(t, sum.Reason, tc.invalid)
			require.Equal(t, b2f(sum.Invalid), r.v(t, "run", "", "invalid"))
			require.Equal(t, tc.flags, sum.Flags)
			require.InDelta(t, tc.events, r.v(t, "run", "", "events"), tc.eventsΔ+1e-9)
			require.Equal(t, b2f(tc.from == analyzer.EventsFromBroker), r.v(t, "run", "", "events_from_broker"))
			require.Equal(t, b2f(tc.from == analyzer.EventsFromGenerator), r.v(t, "run", "", "events_from_progress_series"))
			require.InDelta(t, 20_000.0, r.v(t, "run", "", "events_offered"), 1e-9)
			require.InDelta(t, tc.nodeJ, r.v(t, "run", "", "node_energy_j"), 1e-9)
			if tc.run.targetTill == 0 {
				require.InDelta(t, tc.nodeJ*0.4, r.v(t, "run", "", "sut_energy_j"), 1e-9)
			}
			require.InDelta(t, 4.0, r.v(t, "role", "sut", "peak_power_w"), 1e-9, "a duplicate sample does not add to the peak")
			require.InDelta(t, 10.0, r.v(t, "node", "n-"+runID, "peak_power_w"), 1e-9)
			for _, f := range []string{results.FlagEnergyGapBridged, results.FlagLoadSurplus, results.FlagSamplesLate} {
				require.Equal(t, contains(tc.flags, f), r.has("run", "", "flag_"+f), f)
			}
			if tc.checkRow != nil {
				tc.checkRow(t, r)
			}
		})
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
