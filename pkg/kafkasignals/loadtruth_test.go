package kafkasignals_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/store"
)

// TestCheckRate: only whole seconds of the schedule inside the window are
// compared; a second deviates beyond 1 % of its offered records (exactly
// 1 % does not); instances' on-time records add up; without delivery series
// nothing is checked.
func TestCheckRate(t *testing.T) {
	const start = int64(1_000_000)
	series := func(labels string, vals ...float64) map[string][]store.Point {
		var pts []store.Point
		for k, v := range vals {
			pts = append(pts, store.Point{TsMs: start + int64(k)*1000, Value: v})
		}
		return map[string][]store.Point{labels: pts}
	}
	merge := func(a, b map[string][]store.Point) map[string][]store.Point {
		for k, v := range b {
			a[k] = v
		}
		return a
	}
	offered := series("{}", 1000, 1000, 1000, 1000, 1000)
	for _, tc := range []struct {
		name           string
		onTime         map[string][]store.Point
		from, to       int64
		checked, bad   int
		worstAt        int64
		worstDelivered float64
	}{
		{"exact", series(`{"instance":"a"}`, 1000, 1000, 1000, 1000, 1000), start, start + 5000, 5, 0, start, 1000},
		{"two instances add up", merge(series(`{"instance":"a"}`, 600, 600, 600, 600, 600), series(`{"instance":"b"}`, 400, 400, 400, 400, 389)),
			start, start + 5000, 5, 1, start + 4000, 989},
		{"exactly 1 % short passes", series(`{"instance":"a"}`, 1000, 990, 1000, 1000, 1000), start, start + 5000, 5, 0, start + 1000, 990},
		{"a stall", series(`{"instance":"a"}`, 1000, 0, 0, 700, 1000), start, start + 5000, 5, 3, start + 1000, 0},
		{"seconds cut by the window's edges are not compared", series(`{"instance":"a"}`, 0, 1000, 1000, 1000, 0), start + 500, start + 4500, 3, 0,
			start + 1000, 1000},
		{"window past the schedule: only its seconds", series(`{"instance":"a"}`, 1000, 1000, 1000, 1000, 1000), start + 3000, start + 9000, 2, 0,
			start + 3000, 1000},
		{"a load starting inside the window", series(`{"instance":"a"}`, 1000, 1000, 1000, 1000, 1000), start - 1500, start + 5000, 5, 0, start, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := kafkasignals.CheckRate(kafkasignals.TruthFrom(offered, tc.onTime, nil), tc.from, tc.to, kafkasignals.RateTolerance)
			require.Equal(t, tc.checked, d.Checked)
			require.Equal(t, tc.bad, d.Deviating)
			late := max(0, start-tc.from)
			require.Equal(t, late, d.LateStartMs)
			require.Equal(t, tc.bad > 0 || late > 0, d.Flagged())
			require.Equal(t, tc.worstAt, d.WorstAtMs)
			require.Equal(t, tc.worstDelivered, d.WorstDelivered)
		})
	}
	d := kafkasignals.CheckRate(kafkasignals.TruthFrom(offered, nil, nil), start, start+5000, kafkasignals.RateTolerance)
	require.Zero(t, d.Checked, "no delivery series: nothing checked")
	require.False(t, d.Flagged())
}
