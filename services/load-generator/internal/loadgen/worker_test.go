package loadgen

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// ackingProducer acknowledges every record at once, remembering its key and
// value timestamp when keep is set.
type ackingProducer struct {
	keep bool
	n    int64
	sent []sent
}

type sent struct {
	key string
	ts  int64
}

func (a *ackingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	a.n++
	if a.keep {
		_, rec, err := uc3.DecodeConfluentAvro(r.Value)
		if err != nil || rec.Identifier != string(r.Key) || rec.Timestamp != r.Timestamp.UnixMilli() {
			panic("record does not match its key or timestamp")
		}
		a.sent = append(a.sent, sent{string(r.Key), rec.Timestamp})
	}
	promise(r, nil)
}

func (a *ackingProducer) Flush(context.Context) error { return nil }

func testWorker(sensors int, rate float64, duration time.Duration, prod producer) (*worker, time.Time) {
	cfg := Default()
	cfg.Instance = "test"
	start := time.UnixMilli(1_700_000_000_000)
	w := newWorker(cfg, realClock{}, schedule{start: start, duration: duration, seed: 1, sensors: sensors, format: uc3.FormatAvro,
		schemaID: 1, valueW: 10, period: time.Duration(float64(sensors) * float64(time.Second) / rate)})
	w.prod = prod
	w.share.Store(&share{ranges: []Range{{0, sensors}}})
	return w, start
}

// TestCatchUpAfterStall drives the pacing with an injected clock through a
// one-second stall: afterwards the backlog goes out at no more than
// MaxCatchUp × the rate, and the schedule is caught up as soon as that
// allows, with every record still stamped with its scheduled time.
func TestCatchUpAfterStall(t *testing.T) {
	const rate = 10_000.0
	prod := &ackingProducer{keep: true}
	w, start := testWorker(1000, rate, 10*time.Second, prod)
	s := &pacing{w: w}
	ctx := context.Background()
	at := func(d time.Duration) { s.step(ctx, start.Add(d)) }

	// On schedule with jittery ticks: nothing is ever held back.
	for d := time.Duration(0); d < 2*time.Second; d += time.Duration(1+int(d/time.Millisecond)%7) * time.Millisecond {
		at(d)
		require.Zero(t, s.behind(), "at %s", d)
	}
	at(2 * time.Second)
	require.Equal(t, int64(20_000), prod.n)

	// Stall for a second, then tick every 2 ms again.
	stallEnd := 3 * time.Second
	backlog := int64(rate) // one second of records
	burst := int64(w.cfg.MaxCatchUp * rate * w.cfg.CatchUpBurst.Seconds())
	before := prod.n
	var caughtUp time.Duration
	for d := stallEnd; d <= 5*time.Second; d += 2 * time.Millisecond {
		at(d)
		since := d - stallEnd
		limit := int64(w.cfg.MaxCatchUp*rate*since.Seconds()) + burst + 1
		require.LessOrEqual(t, prod.n-before, limit, "at %s after the stall: faster than %g × the rate", since, w.cfg.MaxCatchUp)
		if caughtUp == 0 && s.behind() == 0 {
			caughtUp = since
		}
	}
	// Catching up one second of backlog at 2× (1× spare) takes ~1 s, less
	// the burst.
	require.NotZero(t, caughtUp, "caught up")
	ideal := time.Duration(float64(backlog-burst) / ((w.cfg.MaxCatchUp - 1) * rate) * float64(time.Second))
	require.InDelta(t, ideal.Seconds(), caughtUp.Seconds(), 0.01, "catches up as fast as allowed")
	require.Equal(t, int64(50_000), prod.n, "nothing skipped")

	// Every record carries its scheduled time, each sensor once per period.
	seen := map[int64]map[string]bool{}
	for _, r := range prod.sent {
		sec := (r.ts - start.UnixMilli()) / 100 // period = 100 ms
		if seen[sec] == nil {
			seen[sec] = map[string]bool{}
		}
		require.False(t, seen[sec][r.key], "%s twice in period %d", r.key, sec)
		seen[sec][r.key] = true
	}
	for p := range int64(50) {
		require.Len(t, seen[p], 1000, "period %d complete", p)
	}
}

// TestEndsOnSchedule: production stops at the end of the schedule; records
// that could not be sent in time are counted as behind, not sent late.
func TestEndsOnSchedule(t *testing.T) {
	prod := &ackingProducer{}
	w, start := testWorker(100, 1000, time.Second, prod)
	s := &pacing{w: w}
	require.False(t, s.step(context.Background(), start.Add(500*time.Millisecond)))
	require.True(t, s.step(context.Background(), start.Add(2*time.Second)))
	require.Equal(t, int64(1000), prod.n+s.behind())
	require.Positive(t, s.behind(), "a half-second stall at the end is not caught up past the end")
	require.Equal(t, int64(1000), w.sched.duration.Milliseconds())
}

// TestTakeOverMidRun: sensors gained mid-run start at the switch; sensors
// kept stay on schedule.
func TestTakeOverMidRun(t *testing.T) {
	prod := &ackingProducer{keep: true}
	w, start := testWorker(100, 100, 4*time.Second, prod)
	w.share.Store(&share{ranges: []Range{{0, 50}}})
	s := &pacing{w: w}
	for d := time.Duration(0); d <= 4*time.Second; d += 5 * time.Millisecond {
		if d == 2*time.Second+500*time.Millisecond {
			w.share.Store(&share{epoch: 1, ranges: []Range{{0, 100}}})
		}
		s.step(context.Background(), start.Add(d))
	}
	perPeriod := map[int64]int{}
	for _, r := range prod.sent {
		perPeriod[(r.ts-start.UnixMilli())/1000]++
	}
	require.Len(t, perPeriod, 4)
	require.Equal(t, 50, perPeriod[0])
	require.Equal(t, 50, perPeriod[1])
	require.Equal(t, 100, perPeriod[3])
	require.Greater(t, perPeriod[2], 50, "gained sensors emit in the rest of the switch period")
	require.Less(t, perPeriod[2], 100, "but not before the switch")
}

// BenchmarkProduceRecord is the generator's own cost per record: pacing,
// encoding, pooling, the promise (the Kafka client excluded). One op is one
// 1 ms tick at 1,000,000 records/s, i.e. 1,000 records.
func BenchmarkProduceRecord(b *testing.B) {
	prod := &ackingProducer{}
	w, start := testWorker(100_000, 1_000_000, 24*time.Hour, prod)
	s := &pacing{w: w}
	ctx := context.Background()
	s.step(ctx, start)
	d := time.Duration(0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n0 := prod.n
	for b.Loop() {
		d += time.Millisecond
		s.step(ctx, start.Add(d))
	}
	runtime.ReadMemStats(&after)
	records := float64(prod.n - n0)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/records, "ns/record")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/records, "allocs/record")
}
