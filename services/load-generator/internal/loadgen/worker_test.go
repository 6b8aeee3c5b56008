package loadgen

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/utils/clock"

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
	w := newWorker(cfg, clock.RealClock{}, schedule{start: start, duration: duration, seed: 1, sensors: sensors, format: uc3.FormatAvro,
		schemaID: 1, valueW: 10, period: time.Duration(float64(sensors) * float64(time.Second) / rate)})
	w.prod = prod
	w.share.Store(&share{pieces: []piece{{Range: Range{0, sensors}}}})
	return w, start
}

// TestCatchUpAfterStall drives the pacing with an injected clock through a
// one-second stall: afterwards the backlog goes out at no more than
// MaxCatchUp × the rate, and the schedule is caught up as soon as that
// allows, with every record still stamped with its scheduled time — ticking
// every 2 ms, and stepping every 60 ms as a process starved of CPU does
// (within LateTolerance: delayed ticks, not stalls). Before, the catch-up
// bucket held at most CatchUpBurst (20 ms) of tokens, so each step after
// more than 20 ms threw the rest away: at 60 ms the backlog took 2.64 s
// instead of 0.88 s, and one built by a stall late in a load was still due
// at its end, counted missed.
func TestCatchUpAfterStall(t *testing.T) {
	for _, every := range []time.Duration{2 * time.Millisecond, 60 * time.Millisecond} {
		t.Run(every.String(), func(t *testing.T) { catchUpAfterStall(t, every) })
	}
}

func catchUpAfterStall(t *testing.T, every time.Duration) {
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

	// Stall for a second, then step every `every` again.
	require.Less(t, every, w.cfg.LateTolerance)
	stallEnd := 3 * time.Second
	backlog := int64(rate) // one second of records
	// Out at once: the records still on schedule (the last LateTolerance
	// of the stall) and a full bucket of catch-up.
	onTime := int64(rate * w.cfg.LateTolerance.Seconds())
	burst := int64((w.cfg.MaxCatchUp - 1) * rate * w.cfg.CatchUpBurst.Seconds())
	before := prod.n
	var caughtUp time.Duration
	for d := stallEnd; d <= 5*time.Second; d = min(d+every, 5*time.Second) {
		at(d)
		since := d - stallEnd
		limit := int64(w.cfg.MaxCatchUp*rate*since.Seconds()) + onTime + burst + 1
		require.LessOrEqual(t, prod.n-before, limit, "at %s after the stall: faster than %g × the rate", since, w.cfg.MaxCatchUp)
		if caughtUp == 0 && s.behind() == 0 {
			caughtUp = since
		}
		if d == 5*time.Second {
			break
		}
	}
	// Catching up one second of backlog at 2× (1× spare) takes ~1 s, less
	// what went out at once.
	require.NotZero(t, caughtUp, "caught up")
	ideal := time.Duration(float64(backlog-onTime-burst) / ((w.cfg.MaxCatchUp - 1) * rate) * float64(time.Second))
	t.Logf("caught up %s after the stall (at the limit: %s)", caughtUp, ideal.Round(time.Millisecond))
	require.InDelta(t, ideal.Seconds(), caughtUp.Seconds(), max(0.01, every.Seconds()), "catches up as fast as allowed")
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

// TestSparseTicksStayOnSchedule: a process starved of CPU steps the pacing
// every 60–90 ms instead of every 2 ms; every record due still goes out at
// the next step — nothing falls behind. (Before, the catch-up limit applied
// to every record, and a step more than 40 ms after the last let out less
// than was due: the load fell behind for good and the run failed.)
func TestSparseTicksStayOnSchedule(t *testing.T) {
	const rate = 10_000.0
	prod := &ackingProducer{}
	w, start := testWorker(1000, rate, 10*time.Second, prod)
	s := &pacing{w: w}
	ctx := context.Background()
	d := time.Duration(0)
	for i := 0; d < 5*time.Second; i++ {
		s.step(ctx, start.Add(d))
		require.Zero(t, s.behind(), "at %s", d)
		d += time.Duration(60+10*(i%4)) * time.Millisecond
	}
	require.Equal(t, w.sched.period, 100*time.Millisecond)
	require.InDelta(t, rate*d.Seconds(), float64(prod.n), 2*rate*0.09, "everything due by the last step")
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

// TestTakeOverMidRun: sensors gained mid-run start where their piece says
// (here: at the switch); sensors kept stay on schedule.
func TestTakeOverMidRun(t *testing.T) {
	prod := &ackingProducer{keep: true}
	w, start := testWorker(100, 100, 4*time.Second, prod)
	w.share.Store(&share{pieces: []piece{{Range: Range{0, 50}}}})
	s := &pacing{w: w}
	switchAt := 2*time.Second + 500*time.Millisecond
	for d := time.Duration(0); d <= 4*time.Second; d += 5 * time.Millisecond {
		if d == switchAt {
			w.share.Store(&share{epoch: 1, pieces: []piece{{Range: Range{0, 50}}, {Range{50, 100}, switchAt, 0, true}}})
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
	require.Zero(t, w.backfilled.Load())
	require.Zero(t, w.skipped.Load())
}

// TestBackfillFromWatermark: a range taken over mid-run from an earlier
// watermark is back-filled from there — every record of it due since the
// watermark is produced, each once, within the catch-up limit and without
// delaying the records of the range already owned — and counted as
// back-filled; what lies beyond MaxBackfill is skipped and counted.
func TestBackfillFromWatermark(t *testing.T) {
	for _, tc := range []struct {
		name        string
		watermark   time.Duration
		produced    time.Duration // how far the previous owner had produced
		maxBackfill time.Duration
	}{
		{"within the bound", 1500 * time.Millisecond, 1600 * time.Millisecond, 10 * time.Second},
		{"beyond the bound", 500 * time.Millisecond, 0, 1500 * time.Millisecond},
		{"beyond the bound, partly produced before", 500 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prod := &ackingProducer{keep: true}
			w, start := testWorker(1000, 1000, 6*time.Second, prod) // period 1 s
			w.cfg.MaxBackfill = tc.maxBackfill
			w.share.Store(&share{pieces: []piece{{Range: Range{0, 500}}}})
			s := &pacing{w: w}
			switchAt := 3 * time.Second
			lateOwn := 0
			for d := time.Duration(0); d <= 6*time.Second; d += 2 * time.Millisecond {
				if d == switchAt {
					w.share.Store(&share{epoch: 1, pieces: []piece{{Range: Range{0, 500}}, {Range{500, 1000}, tc.watermark, tc.produced, true}}})
				}
				n := len(prod.sent)
				s.step(context.Background(), start.Add(d))
				for _, r := range prod.sent[n:] {
					if sensorOf(r.key) < 500 && start.Add(d).Sub(time.UnixMilli(r.ts)) > 20*time.Millisecond {
						lateOwn++
					}
				}
			}
			from := max(tc.watermark, switchAt-tc.maxBackfill)
			seen := map[string]map[int64]bool{}
			for _, r := range prod.sent {
				if seen[r.key] == nil {
					seen[r.key] = map[int64]bool{}
				}
				at := time.UnixMilli(r.ts).Sub(start)
				require.False(t, seen[r.key][r.ts], "%s at %s twice", r.key, at)
				seen[r.key][r.ts] = true
				if sensorOf(r.key) >= 500 {
					require.GreaterOrEqual(t, at, from, "nothing of the gained range before its start")
				}
			}
			gained := NewPacer([]Range{{500, 1000}}, 1000, time.Second, 1)
			require.Equal(t, gained.Due(6*time.Second)-gained.Due(from), int64(len(prod.sent))-3000, "the gained range from its start, completely")
			require.Equal(t, gained.Due(switchAt)-gained.Due(from), w.backfilled.Load(), "records due before the switch are back-filled")
			require.Equal(t, max(0, gained.Due(from)-gained.Due(max(tc.watermark, tc.produced))), w.skipped.Load(),
				"records beyond the bound are skipped, and counted unless the previous owner produced them")
			require.Zero(t, lateOwn, "the owned range stays on schedule while the gained one catches up")
			require.Zero(t, s.behind())
		})
	}
}

// TestLateStartIsNotBackfill: an instance whose share starts after the
// schedule did (a slow start) catches up from the start, but that is not
// back-filling — only ranges resumed after a restart or taken over are.
func TestLateStartIsNotBackfill(t *testing.T) {
	prod := &ackingProducer{}
	w, start := testWorker(100, 1000, 2*time.Second, prod)
	s := &pacing{w: w}
	for d := 300 * time.Millisecond; d <= 2*time.Second; d += 2 * time.Millisecond {
		s.step(context.Background(), start.Add(d))
	}
	require.Equal(t, int64(2000), prod.n, "everything from the start")
	require.Zero(t, w.backfilled.Load())
	require.Zero(t, w.skipped.Load())
}

// TestAckedWatermark: the watermark stays at the oldest record Kafka has not
// acknowledged, and follows production once everything is acknowledged.
func TestAckedWatermark(t *testing.T) {
	prod := &holdingProducer{}
	w, start := testWorker(100, 1000, 10*time.Second, prod) // period 100 ms
	s := &pacing{w: w}
	ctx := context.Background()
	_, shaped := w.checkpoint()
	require.False(t, shaped, "no lanes before the first step")
	for d := time.Duration(0); d <= 2*time.Second; d += 5 * time.Millisecond {
		s.step(ctx, start.Add(d))
	}
	require.Equal(t, int64(2000), w.produced.Load())
	ck, shaped := w.checkpoint()
	require.True(t, shaped)
	require.Len(t, ck, 1)
	require.Equal(t, []Range{{0, 100}}, ck[0].Ranges)
	require.Zero(t, ck[0].AckedNs, "nothing acknowledged")
	require.GreaterOrEqual(t, ck[0].ProducedNs, int64(2*time.Second))

	// Acknowledge everything due before 1.2 s, and one record after it.
	prod.ackBefore(start.Add(1200 * time.Millisecond))
	prod.ackOne(start.Add(1500 * time.Millisecond))
	ck, _ = w.checkpoint()
	require.GreaterOrEqual(t, ck[0].AckedNs, int64(1190*time.Millisecond))
	require.LessOrEqual(t, ck[0].AckedNs, int64(1200*time.Millisecond), "stops at the oldest unacknowledged record's slot")
	prod.ackBefore(start.Add(time.Hour))
	ck, _ = w.checkpoint()
	require.Equal(t, ck[0].ProducedNs, ck[0].AckedNs, "everything produced is acknowledged")
}

// TestFlushGivesUpWhenKafkaIsSilent: the broker goes away as the schedule
// ends; the flush does not wait its whole timeout but gives up once Kafka
// has acknowledged nothing for DeliveryTimeout, and says so.
func TestFlushGivesUpWhenKafkaIsSilent(t *testing.T) {
	prod := &holdingProducer{blockFlush: true}
	w, _ := testWorker(100, 1000, 200*time.Millisecond, prod)
	w.sched.start = time.Now().Truncate(time.Millisecond)
	w.cfg.DeliveryTimeout = 300 * time.Millisecond
	w.cfg.FlushTimeout = time.Minute
	began := time.Now()
	out, _ := w.run(context.Background(), func(progress) {})
	took := time.Since(began)
	require.ErrorContains(t, out.aborted, "kafka acknowledged nothing for")
	require.Positive(t, w.produced.Load())
	require.Less(t, took, 10*time.Second, "not the flush timeout")
	t.Logf("gave up %s after the start (schedule 200 ms, delivery timeout 300 ms)", took.Round(time.Millisecond))
}

// holdingProducer keeps records until told to acknowledge them.
type holdingProducer struct {
	mu         sync.Mutex
	held       []heldRecord
	blockFlush bool // Flush waits for its context, as with a broker gone
}

type heldRecord struct {
	r       *kgo.Record
	promise func(*kgo.Record, error)
}

func (h *holdingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	r.Timestamp = r.Timestamp.Truncate(time.Millisecond) // as kgo does
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = append(h.held, heldRecord{r, promise})
}

func (h *holdingProducer) Flush(ctx context.Context) error {
	if h.blockFlush {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (h *holdingProducer) ackBefore(t time.Time) {
	kept := h.held[:0]
	for _, x := range h.held {
		if x.r.Timestamp.Before(t) {
			x.promise(x.r, nil)
			continue
		}
		kept = append(kept, x)
	}
	h.held = kept
}

func (h *holdingProducer) ackOne(after time.Time) {
	for i, x := range h.held {
		if !x.r.Timestamp.Before(after) {
			x.promise(x.r, nil)
			h.held = append(h.held[:i], h.held[i+1:]...)
			return
		}
	}
}

func sensorOf(key string) int {
	n, _ := strconv.Atoi(key[2:])
	return n
}

// BenchmarkProduceRecord is the generator's own cost per record: pacing,
// encoding, the slab of records, the promise (the Kafka client excluded). One op is one
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

// stoppingProducer acknowledges every record and, at record `at`, stops the
// load (as a load.stop would while the step is producing).
type stoppingProducer struct {
	n, at int64
	stop  context.CancelFunc
}

func (p *stoppingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	p.n++
	if p.n == p.at {
		p.stop()
	}
	promise(r, nil)
}

func (p *stoppingProducer) Flush(context.Context) error { return nil }

// A stop ends a step that is catching up within one chunk of records, not
// after the whole burst (tens of thousands of records, each waiting for room
// when Kafka's buffer is full); the records counted as sent are the ones
// produced.
func TestAStopEndsACatchUpStepWithinAChunk(t *testing.T) {
	stop, cancel := context.WithCancel(context.Background())
	defer cancel()
	prod := &stoppingProducer{at: 300, stop: cancel}
	w, start := testWorker(100_000, 1_000_000, time.Hour, prod)
	s := &pacing{w: w, stop: stop}
	s.step(context.Background(), start)
	s.step(context.Background(), start.Add(100*time.Millisecond)) // 100,000 due, all on schedule
	require.GreaterOrEqual(t, prod.n, prod.at)
	require.LessOrEqual(t, prod.n, prod.at+emitChunk, "the step ended within a chunk of the stop")
	require.Equal(t, prod.n, w.produced.Load())
	var sent int64
	for i := range w.sentAt {
		sent += w.sentAt[i].Load()
	}
	require.Equal(t, prod.n, sent, "sent counts what was produced")
	require.Equal(t, 100_000-prod.n, s.behind(), "the rest is behind")
}
