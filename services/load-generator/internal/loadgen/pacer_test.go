package loadgen

import (
	"cmp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type slot struct {
	at     time.Duration
	sensor int
}

// slots lists p's records due before horizon.
func slots(p *Pacer, horizon time.Duration) []slot {
	var out []slot
	for j := range p.Due(horizon) {
		out = append(out, slot{p.DueAt(j), p.Sensor(j)})
	}
	return out
}

func TestPacerSchedule(t *testing.T) {
	tests := []struct {
		name    string
		sensors int
		period  time.Duration
	}{
		{"one per second", 1000, time.Second},
		{"fast period", 10_000, 100 * time.Millisecond},
		{"slow period", 50, 5 * time.Second},
		{"one sensor", 1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPacer([]Range{{0, tt.sensors}}, tt.sensors, tt.period, 42)
			require.Equal(t, tt.sensors, p.Sensors())
			require.InDelta(t, float64(tt.sensors)/tt.period.Seconds(), p.Rate(), 1e-9)
			horizon := 3 * tt.period
			all := slots(p, horizon)
			require.Len(t, all, 3*tt.sensors, "each sensor once per period")
			require.True(t, slices.IsSortedFunc(all, func(a, b slot) int { return cmp.Compare(a.at, b.at) }), "records in schedule order")
			perPeriod := map[int64]map[int]bool{}
			for j, s := range all {
				require.Equal(t, int64(j)+1, p.Due(s.at+1), "Due counts the records before a time")
				require.Equal(t, Phase(42, s.sensor, tt.sensors, tt.period), s.at%tt.period, "each sensor at its phase")
				m := int64(s.at / tt.period)
				if perPeriod[m] == nil {
					perPeriod[m] = map[int]bool{}
				}
				require.False(t, perPeriod[m][s.sensor], "sensor %d twice in period %d", s.sensor, m)
				perPeriod[m][s.sensor] = true
			}
			require.Zero(t, p.Due(0))
			require.Zero(t, p.Due(-time.Second))
		})
	}
}

// TestPacerExactPerSecond: every second of schedule, wherever it starts,
// holds the rate ±1, for any period (phases are evenly spaced).
func TestPacerExactPerSecond(t *testing.T) {
	tests := []struct {
		sensors int
		rate    float64
	}{
		{10_000, 10_000}, {10_000, 100_000}, {150_000, 10_000}, {150_000, 100_000}, {150_000, 150_000}, {7, 3}, {1000, 333},
	}
	for _, tt := range tests {
		period := time.Duration(float64(tt.sensors) * float64(time.Second) / tt.rate)
		p := NewPacer([]Range{{0, tt.sensors}}, tt.sensors, period, 7)
		for _, from := range []time.Duration{0, time.Second, 1234567891, 5 * time.Second, 17*time.Second + 1} {
			got := p.Due(from+time.Second) - p.Due(from)
			require.InDelta(t, tt.rate, float64(got), 1.001, "%d sensors at %g/s, the second from %s", tt.sensors, tt.rate, from)
		}
	}
}

func TestPermute(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 5, 16, 17, 1000, 65_537} {
		seen := make([]bool, n)
		same := 0
		for x := range n {
			y := permute(99, x, n)
			require.Less(t, y, n)
			require.False(t, seen[y], "n=%d: %d hit twice", n, y)
			seen[y] = true
			if y == x {
				same++
			}
		}
		if n >= 1000 {
			require.Less(t, same, int(n/50), "n=%d: looks shuffled", n)
			require.NotEqual(t, permute(99, 5, n), permute(100, 5, n), "the seed matters")
		}
	}
}

// TestPacerSharesAddUp: instances scheduling disjoint ranges with the same
// seed together follow exactly the single-instance schedule.
func TestPacerSharesAddUp(t *testing.T) {
	const n, seed = 999, 3
	period := 500 * time.Millisecond
	whole := slots(NewPacer([]Range{{0, n}}, n, period, seed), 2*time.Second)
	var union []slot
	for _, o := range split(0, n, []string{"a", "b", "c", "d"}) {
		union = append(union, slots(NewPacer([]Range{o.Range}, n, period, seed), 2*time.Second)...)
	}
	byTime := func(a, b slot) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.sensor, b.sensor)
	}
	slices.SortFunc(union, byTime)
	slices.SortFunc(whole, byTime)
	require.Equal(t, whole, union)
	// Two ranges of one instance are one pacer.
	two := slots(NewPacer([]Range{{0, 10}, {500, 510}}, n, period, seed), time.Second)
	require.Len(t, two, 40)
}

func TestThrottle(t *testing.T) {
	t0 := time.Unix(0, 0)
	th := newThrottle(10_000, 2, 20*time.Millisecond, 100*time.Millisecond, t0)
	require.Equal(t, int64(200), th.allow(t0, 1000, 0), "a full bucket: 20 ms of backlog at the spare 1× the rate")
	require.Equal(t, int64(0), th.allow(t0, 1000, 0))
	require.Equal(t, int64(10), th.allow(t0.Add(time.Millisecond), 1000, 0), "refills at 10,000/s")
	require.Equal(t, int64(300), th.allow(t0.Add(time.Millisecond), 1000, 300), "records on schedule go without tokens")
	require.Equal(t, int64(600), th.allow(t0.Add(61*time.Millisecond), 1000, 0), "a tick delayed 60 ms (within the tolerance) keeps all 60 ms of tokens")
	require.Equal(t, int64(200), th.allow(t0.Add(211*time.Millisecond), 1000, 0), "after a 150 ms stall: the burst")
	require.Equal(t, int64(5), th.allow(t0.Add(time.Hour), 5, 0), "takes only what is wanted")
	require.Equal(t, int64(195), th.allow(t0.Add(time.Hour), 1000, 0), "capped at the burst after a long pause")
	require.Equal(t, int64(1000), th.allow(t0.Add(time.Hour), 1000, 1000), "an empty bucket holds back no record on schedule")
	th.setRate(1, 2, time.Millisecond)
	require.Equal(t, int64(1), th.allow(t0.Add(2*time.Hour), 10, 0), "at least one record fits even at tiny rates")
}
