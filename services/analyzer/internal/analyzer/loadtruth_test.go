package analyzer_test

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestLoadRateDeviationFlagged: the load generators' per-second delivery
// series (records of each second delivered on time, against those offered)
// flag a run one of whose window's seconds delivered more than 1 % off the
// offered rate — here a stall: nothing on time for two seconds, then a
// second partly late while the backlog goes out, or a single second 1.1 %
// short — while the window's total alone (the load tolerance) would pass
// it; a run delivering every second at the rate is not flagged, nor is one
// exactly 1 % short in a second, nor a deviation in a second cut by the
// window's edges or outside the window. A load whose schedule started 2 s
// into the window (a preparation longer than the warm-up) is flagged.
func TestLoadRateDeviationFlagged(t *testing.T) {
	st := testenv.Store(t)
	ctx := context.Background()
	a := newAnalyzer(t, st)
	for _, tc := range []struct {
		run    string
		onTime func(k int64) float64 // second k of the schedule, which starts 1.5 s before the window
		flag   bool
		late   bool // the schedule starts 2 s after the window instead
	}{
		{"e1-lt0000", func(int64) float64 { return 1000 }, false, false},
		{"e1-lt0001", func(k int64) float64 { return map[int64]float64{0: 0, 1: 0, 21: 0}[k] + 1000*b(k > 1 && k < 21) }, false, false},
		{"e1-lt0002", func(k int64) float64 {
			return map[int64]float64{5: 0, 6: 0, 7: 400}[k] + 1000*b(k < 5 || k > 7)
		}, true, false},
		{"e1-lt0003", func(k int64) float64 { return 1000 - 11*b(k == 10) }, true, false},
		{"e1-lt0004", func(k int64) float64 { return 1000 - 10*b(k == 10) }, false, false},
		{"e1-lt0005", func(int64) float64 { return 1000 }, true, true},
	} {
		m := runFixture(t, st, tc.run, "c-"+tc.run, 0, 30, 80)
		target := kafkasignals.Target{ExperimentID: m.ExperimentID, RunID: m.RunID}
		const seconds = 22
		startMs := m.MeasureStartMs - 1500
		if tc.late {
			startMs = m.MeasureStartMs + 2000
		}
		offered, onTime := make([]float64, seconds), make([]float64, seconds)
		for k := range int64(seconds) {
			offered[k], onTime[k] = 1000, tc.onTime(k)
		}
		pts := kafkasignals.PerSecondPoints(target, kafkasignals.MetricLoadOffered, nil, startMs, offered)
		pts = append(pts, kafkasignals.PerSecondPoints(target, kafkasignals.MetricLoadOnTime, map[string]string{"instance": "a"}, startMs, onTime)...)
		require.NoError(t, st.InsertRunMetrics(ctx, pts))
		_, sum, err := a.Analyze(ctx, m)
		require.NoError(t, err)
		require.Equal(t, tc.flag, slices.Contains(sum.Flags, results.FlagLoadRateDeviation), "%s: flags %v", tc.run, sum.Flags)
		require.False(t, sum.Invalid, "%s: a flag, not a failure: %s", tc.run, sum.Reason)
	}
}

func b(x bool) float64 {
	if x {
		return 1
	}
	return 0
}
