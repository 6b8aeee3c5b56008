package analyzer_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// TestTwoMetersOnOneNode adds a second meter of node n1's total to
// runFixture's model (10 W at baseline, 30 W in the 20 s window), its
// samples half a second off the model's, so the two overlap throughout:
//
//   - a hardware counter (RAPL, another collector) reading 11 W and 33 W:
//     two sources by design. The run stays valid, its node energy is the
//     hardware meter's, 33 W × 20 s = 660 J (not the 1260 J of both
//     summed), and the residual of the model against it is 600 − 660 =
//     −60 J, −9.09 %. Its baseline takes the hardware meter's too: the
//     samples ending in [−10 s, 0] at 11 W, the one ending at +0.5 s
//     reaching 0.5 s back into it at 33 W: (9.5 × 11 + 0.5 × 33) / 10 s
//     = 12.1 W.
//   - the same source, model, written again by a second collector: one
//     meter measured twice, invalid as before.
func TestTwoMetersOnOneNode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, source string
		estimated    bool
		invalid      bool
	}{
		{"RAPL beside the model", "rapl", false, false},
		// A Grid'5000 wattmeter (collector kind kwollect) is a hardware
		// meter like RAPL: the model's residual is against it.
		{"a wattmeter beside the model", "wattmeter", false, false},
		{"the model written twice", "model", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := testenv.Store(t)
			ctx := context.Background()
			a := newAnalyzer(t, st)
			m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 0)
			rows := meterSamples(tc.source, "c2", 11, 33)
			for i := range rows {
				rows[i].Estimated = tc.estimated
			}
			require.NoError(t, st.InsertSamples(ctx, rows))
			res, sum, err := a.Analyze(ctx, m)
			require.NoError(t, err)
			if tc.invalid {
				require.True(t, sum.Invalid)
				require.Contains(t, sum.Reason, "energy samples of node n1 cover")
				require.Contains(t, sum.Reason, "measured twice")
				return
			}
			require.False(t, sum.Invalid, sum.Reason)
			r := index(res)
			r.expect(t, []want{
				{"run", "", results.NodeEnergyJ, 660, 1e-6},
				{"node", "n1", "baseline_power_w", 12.1, 1e-6},
				{"node", "n1", results.QualityCrossMeters, 2, 0},
				{"node", "n1", results.QualityCrossMeterResidualJ, -60, 1e-6},
				{"node", "n1", results.QualityCrossMeterResidualPct, -100.0 / 11, 1e-6},
				{"node", "n1", results.QualityMixedSources, 0, 0},
			})
		})
	}
}

// meterSamples are the 1 s counter samples of another meter of node n1's
// total beside runFixture's model, half a second off the model's: idle W
// from −10 s to the window's start, busy W in the window (to +20 s).
func meterSamples(source, collector string, idle, busy float64) []store.Sample {
	var rows []store.Sample
	cum := 0.0
	for k := int64(-10); k <= 20; k++ {
		w := idle
		if k >= 0 {
			w = busy
		}
		cum += w
		x := counterSample(t0+k*1000+500, "n1", "node", "node/n1", w, cum, 1000)
		x.Source, x.Collector = source, collector
		rows = append(rows, x)
	}
	return rows
}

// A Grid'5000 node with RAPL and a wattmeter beside runFixture's model:
// RAPL at 33 W in the window, the wattmeter at 40 W (the whole node at
// the wall sees more than the packages and DRAM). The residual is the
// wattmeter's 800 J minus RAPL's 660 J = 140 J, 17.5 % of the
// wattmeter's, not estimated, whichever meter is the primary; the run's
// node energy is RAPL's (the primary: a counter, first by name).
func TestWattmeterRAPLResidual(t *testing.T) {
	t.Parallel()
	st := testenv.Store(t)
	ctx := context.Background()
	a := newAnalyzer(t, st)
	m := runFixture(t, st, "e1-r0000", "c1", 0, 30, 0)
	rows := append(meterSamples("rapl", "c-rapl", 11, 33), meterSamples("wattmeter", "c-wattmeter", 15, 40)...)
	require.NoError(t, st.InsertSamples(ctx, rows))
	res, sum, err := a.Analyze(ctx, m)
	require.NoError(t, err)
	require.False(t, sum.Invalid, sum.Reason)
	r := index(res)
	r.expect(t, []want{
		{"run", "", results.NodeEnergyJ, 660, 1e-6},
		{"node", "n1", results.QualityCrossMeters, 3, 0},
		{"node", "n1", results.QualityWattmeterRAPLResidualJ, 140, 1e-6},
		{"node", "n1", results.QualityWattmeterRAPLResidualPct, 17.5, 1e-6},
		{"run", "", results.QualityWattmeterRAPLResidualJ, 140, 1e-6},
		{"run", "", results.QualityWattmeterRAPLResidualPct, 17.5, 1e-6},
	})
	for _, x := range res {
		if x.Metric == results.QualityWattmeterRAPLResidualJ {
			require.False(t, x.Estimated, "two hardware meters: nothing estimated")
		}
	}
}

// TestMeterChangeOrTwoMeters: richInputs' node n2 has one power series
// from two sources, kepler and model (50 J in the 10 s window). Read by
// source, either they took turns (a meter that changed: kept as one mixed
// series, flagged quality_mixed_sources) or each covered the whole window
// (two meters, both estimates and gauges, so the primary is kepler by name:
// its 60 J is the node's energy and the model's −10 J, −16.7 % is the
// residual).
func TestMeterChangeOrTwoMeters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                     string
		bySource                 []store.SeriesWindow
		energyJ, mixed, residual float64
	}{
		{"took turns", n2BySource(25, 5000, 25, 5000), 50, 1, 0},
		{"two meters", n2BySource(60, 10_000, 50, 10_000), 60, 0, -10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := richInputs()
			in.WindowBySource = tc.bySource
			rows, _ := analyzer.Compute(in, analyzer.Default())
			r := index(rows)
			require.Equal(t, tc.energyJ, r.v(t, "node", "n2", results.EnergyJ))
			require.Equal(t, tc.mixed, r.v(t, "node", "n2", results.QualityMixedSources))
			if tc.residual == 0 {
				require.False(t, r.has("node", "n2", results.QualityCrossMeterResidualJ))
				return
			}
			require.Equal(t, 2.0, r.v(t, "node", "n2", results.QualityCrossMeters))
			require.Equal(t, tc.residual, r.v(t, "node", "n2", results.QualityCrossMeterResidualJ))
			require.InDelta(t, 100*tc.residual/tc.energyJ, r.v(t, "node", "n2", results.QualityCrossMeterResidualPct), 1e-9)
		})
	}
}

// n2BySource is richInputs' mixed series of node n2 read by source: kepler
// and model power series, both estimates with their energies and spans in the
// window.
func n2BySource(keplerJ, keplerSpanMs, modelJ, modelSpanMs float64) []store.SeriesWindow {
	gauge := func(source string, j, spanMs float64, est bool) store.SeriesWindow {
		return store.SeriesWindow{Scope: "node", TargetID: "node/n2", Node: "n2", Sources: []string{source}, Estimated: est, PowerOnly: true,
			Samples: 5, PeakW: 6, MaxIntervalMs: 1000, TrapzJ: j, GaugeSpanMs: spanMs}
	}
	return []store.SeriesWindow{gauge("kepler", keplerJ, keplerSpanMs, true), gauge("model", modelJ, modelSpanMs, true)}
}
