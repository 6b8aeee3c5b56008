package aggregate_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris without relying on the host's zoneinfo

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/aggregate"
)

const (
	day = 24 * time.Hour
	dMs = int64(day / time.Millisecond)
	hMs = int64(time.Hour / time.Millisecond)
)

func paris(tb testing.TB) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation("Europe/Paris")
	require.NoError(tb, err)
	return loc
}

func newEngine(tb testing.TB, duration, advance time.Duration) *aggregate.Engine {
	tb.Helper()
	e, err := aggregate.New(aggregate.Config{Location: paris(tb), Duration: duration, Advance: advance})
	require.NoError(tb, err)
	return e
}

func ms(tb testing.TB, rfc3339 string) int64 {
	tb.Helper()
	ts, err := time.Parse(time.RFC3339, rfc3339)
	require.NoError(tb, err)
	return ts.UnixMilli()
}

func rec(id string, ts int64, v float64) uc3.ActivePowerRecord {
	return uc3.ActivePowerRecord{Identifier: id, Timestamp: ts, ValueInW: v}
}

func TestConfigValidate(t *testing.T) {
	loc := paris(t)
	tests := []struct {
		name    string
		cfg     aggregate.Config
		wantErr []string
	}{
		{"theodolite defaults", aggregate.Config{Location: loc, Duration: aggregate.DefaultDuration, Advance: aggregate.DefaultAdvance}, nil},
		{"tumbling", aggregate.Config{Location: time.UTC, Duration: time.Hour, Advance: time.Hour}, nil},
		{"everything wrong", aggregate.Config{Duration: -time.Hour, Advance: time.Microsecond},
			[]string{"location: must be set", "duration: -1h0m0s is not a positive", "advance: 1µs is not a positive"}},
		{"advance longer than duration", aggregate.Config{Location: loc, Duration: time.Hour, Advance: 2 * time.Hour},
			[]string{"advance: 2h0m0s is longer than the window duration 1h0m0s"}},
		{"too many windows", aggregate.Config{Location: loc, Duration: aggregate.DefaultDuration, Advance: time.Minute},
			[]string{"advance: 1m0s gives 43200 windows per record, more than 4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				require.NoError(t, err)
				_, err = aggregate.New(tt.cfg)
				require.NoError(t, err)
				return
			}
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			_, err = aggregate.New(tt.cfg)
			require.ErrorContains(t, err, "configure aggregation")
		})
	}
	require.Equal(t, 30*day, aggregate.Default().Duration)
	require.Equal(t, day, aggregate.Default().Advance)
}

// TestWindowsAlignedLikeKafkaStreams checks the windows of one record
// against Kafka Streams' TimeWindows.windowsFor, transcribed.
func TestWindowsAlignedLikeKafkaStreams(t *testing.T) {
	size, advance := 30*dMs, dMs
	for _, ts := range []int64{
		ms(t, "2024-06-15T13:45:00Z"),
		ms(t, "2024-06-15T00:00:00Z"),     // exactly on a window start
		ms(t, "2024-06-14T23:59:59.999Z"), // just before one
		5*dMs + 7,                         // near the epoch: fewer windows
		0,
	} {
		t.Run(time.UnixMilli(ts).UTC().Format(time.RFC3339Nano), func(t *testing.T) {
			var want []aggregate.Window
			for start := max(0, ts-size+advance) / advance * advance; start <= ts; start += advance {
				want = append(want, aggregate.Window{Start: start, End: start + size})
			}

			e := newEngine(t, aggregate.DefaultDuration, aggregate.DefaultAdvance)
			require.Equal(t, aggregate.Accepted, e.Add(rec("s_0", ts, 10)))
			var got []aggregate.Window
			for _, u := range e.Drain(nil) {
				got = append(got, u.Window)
				require.Equal(t, aggregate.Key{HourOfDay: aggregate.HourOfDay(ts, paris(t)), SensorID: "s_0"}, u.Key)
				require.Equal(t, int64(1), u.Stats.Count)
			}
			require.ElementsMatch(t, want, got)
		})
	}
}

func TestHourOfDayAcrossDST(t *testing.T) {
	loc := paris(t)
	tests := []struct {
		utc  string
		hour int
	}{
		{"2024-03-31T00:30:00Z", 1}, // 01:30 CET
		{"2024-03-31T01:30:00Z", 3}, // 03:30 CEST: 02:xx does not exist
		{"2024-10-27T00:30:00Z", 2}, // 02:30 CEST
		{"2024-10-27T01:30:00Z", 2}, // 02:30 CET: 02:xx happens twice
		{"2024-10-27T02:30:00Z", 3},
		{"2024-07-01T22:00:00Z", 0},
		{"2024-01-01T23:00:00Z", 0},
	}
	for _, tt := range tests {
		require.Equal(t, tt.hour, aggregate.HourOfDay(ms(t, tt.utc), loc), tt.utc)
	}

	// The doubled autumn hour lands in one key.
	e := newEngine(t, 6*time.Hour, time.Hour)
	e.Add(rec("s_1", ms(t, "2024-10-27T00:30:00Z"), 1))
	e.Add(rec("s_1", ms(t, "2024-10-27T01:30:00Z"), 3))
	counts := map[int64]int64{}
	for _, u := range e.Drain(nil) {
		require.Equal(t, aggregate.Key{HourOfDay: 2, SensorID: "s_1"}, u.Key)
		counts[u.Window.Start] = u.Stats.Count
	}
	// Windows starting 19:00Z–00:00Z hold the first record, 20:00Z–01:00Z
	// the second; those from 20:00Z to 00:00Z hold both.
	require.Len(t, counts, 7)
	require.Equal(t, int64(2), counts[ms(t, "2024-10-26T22:00:00Z")])
	require.Equal(t, int64(1), counts[ms(t, "2024-10-26T19:00:00Z")])
	require.Equal(t, int64(1), counts[ms(t, "2024-10-27T01:00:00Z")])
}

func TestLateRecordsAndNoGrace(t *testing.T) {
	// Minute windows keep every record in the same hour, hence one key.
	const mMs = int64(time.Minute / time.Millisecond)
	e := newEngine(t, 3*time.Minute, time.Minute)
	t0 := ms(t, "2024-06-01T12:00:00Z") // a window start

	require.Equal(t, aggregate.Accepted, e.Add(rec("s_0", t0+3*mMs, 1)))
	require.Equal(t, t0+3*mMs, e.StreamTime())
	e.Drain(nil)

	// [t0, t0+3m) ended exactly at stream time: closed, no grace.
	require.Equal(t, aggregate.Late, e.Add(rec("s_0", t0+mMs-1, 2)))
	require.Zero(t, e.Pending())

	// t0+1m is in [t0+1m, t0+4m) (open) and [t0-1m, t0+2m), [t0, t0+3m) (closed).
	require.Equal(t, aggregate.Accepted, e.Add(rec("s_0", t0+mMs, 3)))
	ups := e.Drain(nil)
	require.Len(t, ups, 1)
	require.Equal(t, aggregate.Window{Start: t0 + mMs, End: t0 + 4*mMs}, ups[0].Window)
	require.Equal(t, int64(2), ups[0].Stats.Count, "also holds the first record")
	require.Equal(t, 2.0, ups[0].Stats.Mean)

	// Stream time does not move backwards for a late record.
	require.Equal(t, aggregate.Late, e.Add(rec("s_0", t0-10*mMs, 3)))
	require.Equal(t, t0+3*mMs, e.StreamTime())
	require.Empty(t, e.Drain(nil))
}

func TestInvalidTimestamps(t *testing.T) {
	e := newEngine(t, aggregate.DefaultDuration, aggregate.DefaultAdvance)
	require.Equal(t, aggregate.Invalid, e.Add(rec("s_0", -1, 1)))
	require.Equal(t, aggregate.Invalid, e.Add(rec("s_0", math.MaxInt64, 1)))
	require.Equal(t, aggregate.Invalid, e.Add(rec("s_0", math.MaxInt64-30*dMs+1, 1)))
	require.Equal(t, int64(-1), e.StreamTime())
	require.Zero(t, e.Pending())
	require.Equal(t, aggregate.Accepted, e.Add(rec("s_0", math.MaxInt64-30*dMs, 1)))
	require.Equal(t, "invalid", aggregate.Invalid.String())
}

func TestDrainReturnsOnlyChangedWindows(t *testing.T) {
	e := newEngine(t, 2*time.Hour, time.Hour)
	t0 := ms(t, "2024-06-01T12:10:00Z")
	e.Add(rec("s_0", t0, 10))
	e.Add(rec("s_1", t0, 20))
	require.Len(t, e.Drain(nil), 4)
	require.Empty(t, e.Drain(nil))

	e.Add(rec("s_1", t0+1, 30))
	ups := e.Drain(make([]aggregate.Update, 0, 8))
	require.Len(t, ups, 2)
	for _, u := range ups {
		require.Equal(t, "s_1", u.Key.SensorID)
		require.Equal(t, int64(2), u.Stats.Count)
		require.Equal(t, 25.0, u.Stats.Mean)
		require.Equal(t, 25.0, u.Stats.PopulationVariance())
		require.Equal(t, 20.0, u.Stats.Min)
		require.Equal(t, 30.0, u.Stats.Max)
	}
}

// TestWelfordIsStableForLargeOffsets uses values where the naive
// E[x²]-E[x]² formula loses every significant digit.
func TestWelfordIsStableForLargeOffsets(t *testing.T) {
	e := newEngine(t, time.Hour, time.Hour)
	t0 := ms(t, "2024-06-01T12:00:00Z")
	for i, v := range []float64{4, 7, 13, 16} {
		e.Add(rec("s_0", t0+int64(i), 1e9+v))
	}
	ups := e.Drain(nil)
	require.Len(t, ups, 1)
	require.InDelta(t, 1e9+10, ups[0].Stats.Mean, 1e-6)
	require.InDelta(t, 22.5, ups[0].Stats.PopulationVariance(), 1e-6)
}

func TestMemoryIsBounded(t *testing.T) {
	e := newEngine(t, aggregate.DefaultDuration, aggregate.DefaultAdvance)
	start := ms(t, "2024-01-01T00:00:00Z")
	var buf []aggregate.Update
	// Ten sensors for ten days, every 20 minutes; then only s_0 for 60 days.
	for ts := start; ts < start+70*dMs; ts += 20 * 60 * 1000 {
		sensors := 10
		if ts >= start+10*dMs {
			sensors = 1
		}
		for i := range sensors {
			require.Equal(t, aggregate.Accepted, e.Add(rec(fmt.Sprintf("s_%d", i), ts, float64(i))))
		}
		require.LessOrEqual(t, e.Windows(), e.Keys()*30)
		buf = e.Drain(buf[:0])
	}
	require.Equal(t, 24, e.Keys(), "only s_0's hours are left")
	require.LessOrEqual(t, e.Windows(), 24*30)
	require.Zero(t, e.Pending())
}

// model is a brute-force UC-3 aggregation: it keeps every value of every
// window and enumerates windows from their definition.
type model struct {
	loc           *time.Location
	size, advance int64
	streamTime    int64
	values        map[wkey][]float64
	touched       map[wkey]bool
}

type wkey struct {
	key   aggregate.Key
	start int64
}

func (m *model) add(r uc3.ActivePowerRecord) aggregate.Outcome {
	ts := r.Timestamp
	if ts < 0 || ts > math.MaxInt64-m.size {
		return aggregate.Invalid
	}
	m.streamTime = max(m.streamTime, ts)
	key := aggregate.Key{HourOfDay: time.Unix(ts/1000, 0).In(m.loc).Hour(), SensorID: r.Identifier}
	outcome := aggregate.Late
	for k := ts / m.advance; k >= 0; k-- {
		start := k * m.advance
		if start+m.size <= ts {
			break // the window does not contain ts
		}
		if start+m.size <= m.streamTime {
			continue // closed
		}
		wk := wkey{key, start}
		m.values[wk] = append(m.values[wk], r.ValueInW)
		m.touched[wk] = true
		outcome = aggregate.Accepted
	}
	return outcome
}

// check compares one Drain against the model and resets what was touched.
func (m *model) check(t *testing.T, got []aggregate.Update) {
	t.Helper()
	seen := map[wkey]bool{}
	for _, u := range got {
		wk := wkey{u.Key, u.Window.Start}
		require.False(t, seen[wk], "window %+v emitted twice in one drain", wk)
		seen[wk] = true
		require.True(t, m.touched[wk], "window %+v emitted but not updated", wk)
		require.Equal(t, m.size, u.Window.End-u.Window.Start)

		vals := m.values[wk]
		var sum float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, v := range vals {
			sum += v
			lo, hi = min(lo, v), max(hi, v)
		}
		mean := sum / float64(len(vals))
		var ss float64
		for _, v := range vals {
			ss += (v - mean) * (v - mean)
		}
		require.Equal(t, int64(len(vals)), u.Stats.Count, "count of %+v", wk)
		require.Equal(t, lo, u.Stats.Min, "min of %+v", wk)
		require.Equal(t, hi, u.Stats.Max, "max of %+v", wk)
		require.InDelta(t, mean, u.Stats.Mean, 1e-9*max(1, math.Abs(mean)), "mean of %+v", wk)
		variance := ss / float64(len(vals))
		require.InDelta(t, variance, u.Stats.PopulationVariance(), 1e-9*max(1, variance), "variance of %+v", wk)
	}
	require.Len(t, seen, len(m.touched), "every updated window is emitted")
	clear(m.touched)
}

// TestEngineMatchesBruteForce feeds random streams — out-of-order and late
// records, records on and next to window boundaries, DST changes in
// Europe/Paris, the epoch — to the engine and the model and compares every
// drained aggregate.
func TestEngineMatchesBruteForce(t *testing.T) {
	scenarios := []struct {
		name              string
		duration, advance time.Duration
		start             string
		span              time.Duration
		constant          bool
	}{
		{"theodolite windows over spring DST", aggregate.DefaultDuration, aggregate.DefaultAdvance, "2024-03-01T00:00:00Z", 90 * day, false},
		{"theodolite windows constant load", aggregate.DefaultDuration, aggregate.DefaultAdvance, "2024-10-01T00:00:00Z", 60 * day, true},
		{"hourly hops over spring DST", 6 * time.Hour, time.Hour, "2024-03-30T22:00:00Z", 12 * time.Hour, false},
		{"hourly hops over autumn DST", 6 * time.Hour, time.Hour, "2024-10-26T22:00:00Z", 12 * time.Hour, false},
		{"size not a multiple of advance", 5 * time.Hour, 2 * time.Hour, "2024-10-26T20:00:00Z", 24 * time.Hour, false},
		{"tumbling", time.Hour, time.Hour, "2024-10-27T00:00:00Z", 6 * time.Hour, false},
		{"near the epoch", 3 * day, day, "1970-01-01T00:00:00Z", 6 * day, false},
		{"millisecond windows", 10 * time.Millisecond, 3 * time.Millisecond, "2024-03-31T00:59:59.9Z", 200 * time.Millisecond, false},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for seed := range uint64(25) {
				rng := rand.New(rand.NewPCG(seed, 0x5eed))
				e := newEngine(t, sc.duration, sc.advance)
				m := &model{
					loc: paris(t), size: sc.duration.Milliseconds(), advance: sc.advance.Milliseconds(),
					streamTime: -1, values: map[wkey][]float64{}, touched: map[wkey]bool{},
				}
				n := 200 + rng.IntN(300)
				start := ms(t, sc.start)
				step := int64(sc.span/time.Millisecond) / int64(n)
				cur := start
				sensors := 1 + rng.IntN(4)
				var buf []aggregate.Update
				outcomes := map[aggregate.Outcome]int{}
				for range n {
					cur += rng.Int64N(2*step + 1)
					ts := cur
					switch p := rng.Float64(); {
					case p < 0.10: // late, or nearly so
						ts = m.streamTime - rng.Int64N(2*m.size+1)
					case p < 0.25: // on or next to a window boundary
						k := max(0, m.streamTime/m.advance+rng.Int64N(5)-3)
						ts = k*m.advance + rng.Int64N(3) - 1
					case p < 0.40: // out of order within the windows
						ts = cur - rng.Int64N(3*step+1)
					}
					v := 10.0
					if !sc.constant {
						v = math.Round(rng.Float64()*2000-500) / 4
					}
					r := rec(fmt.Sprintf("s_%d", rng.IntN(sensors)), ts, v)
					want := m.add(r)
					require.Equal(t, want, e.Add(r), "record %+v", r)
					outcomes[want]++
					if rng.IntN(20) == 0 {
						buf = e.Drain(buf[:0])
						m.check(t, buf)
					}
				}
				buf = e.Drain(buf[:0])
				m.check(t, buf)
				require.Positive(t, outcomes[aggregate.Accepted])
				require.Positive(t, outcomes[aggregate.Late], "the stream exercises late records")
			}
		})
	}
}

func benchmarkEngine(b *testing.B, sensors, drainEvery int) {
	e := newEngine(b, aggregate.DefaultDuration, aggregate.DefaultAdvance)
	ids := make([]string, sensors)
	for i := range ids {
		ids[i] = string(uc3.AppendSensorKey(nil, i))
	}
	// Every sensor emits once per second, as Theodolite's generator does.
	start := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	var buf []aggregate.Update
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		s := i % sensors
		ts := start + int64(i/sensors)*1000 + int64(s)*1000/int64(sensors)
		e.Add(uc3.ActivePowerRecord{Identifier: ids[s], Timestamp: ts, ValueInW: 10})
		i++
		if i%drainEvery == 0 {
			buf = e.Drain(buf[:0])
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkEngineAdd folds records into 30-day windows hopping daily (30
// window updates per record) and drains every second of event time, like the
// processor emitting each second under a live load.
func BenchmarkEngineAdd(b *testing.B) {
	for _, sensors := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("sensors=%d", sensors), func(b *testing.B) { benchmarkEngine(b, sensors, sensors) })
	}
}
