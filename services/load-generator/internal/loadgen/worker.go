package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// producer is what a worker needs of a Kafka client. Produce must call the
// promise exactly once per record; after that the worker reuses the record.
type producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

var _ producer = (*kgo.Client)(nil)

// share is one instance's part of a load at one epoch of the plan.
type share struct {
	epoch  int
	ranges []Range
}

// schedule is what every instance of a load agrees on.
type schedule struct {
	start    time.Time // of the schedule, whole milliseconds
	duration time.Duration
	period   time.Duration
	seed     uint64
	sensors  int
	format   uc3.Format
	schemaID uint32
	valueW   float64
}

// buckets is the number of seconds of schedule (the last may be partial).
func (s schedule) buckets() int { return int((s.duration + time.Second - 1) / time.Second) }

// joinGrace: an instance whose first share arrives this soon after the
// start still produces the records due since the start (throttled); later,
// or for sensors taken over from another instance, it starts at once.
const joinGrace = time.Second

// outcome is how a worker's production ended.
type outcome struct {
	behind  int64         // records due by the end that were never produced
	endedAt time.Duration // schedule time when production stopped
	aborted error         // Kafka failure that ended the load early
	flush   error
	stopped bool
}

// worker produces one instance's share of one load. The hot path does not
// allocate: records and their value buffers are recycled in the promise,
// keys and identifiers come from one table built up front.
type worker struct {
	cfg   Config
	clock Clock
	prod  producer
	sched schedule
	keys  keyTable

	share atomic.Pointer[share]

	produced, acked, failed atomic.Int64
	backlog, assigned       atomic.Int64   // for metrics
	buckets                 []atomic.Int64 // acknowledged records per second of schedule
	firstErr                atomic.Pointer[string]

	pool   sync.Pool
	onDone func(*kgo.Record, error)
}

func newWorker(cfg Config, clock Clock, sched schedule) *worker {
	w := &worker{cfg: cfg, clock: clock, sched: sched, keys: newKeyTable(sched.sensors), buckets: make([]atomic.Int64, sched.buckets())}
	w.onDone = w.promise
	return w
}

// keyTable holds every sensor's key as bytes (the Kafka key) and as a string
// (the record's identifier) in two flat buffers, so neither allocates per
// record.
type keyTable struct {
	buf []byte
	str string
	off []int32
}

func newKeyTable(n int) keyTable {
	off := make([]int32, n+1)
	buf := make([]byte, 0, n*8)
	for i := range n {
		buf = uc3.AppendSensorKey(buf, i)
		off[i+1] = int32(len(buf))
	}
	return keyTable{buf: buf, str: string(buf), off: off}
}

func (k *keyTable) key(s int) []byte { return k.buf[k.off[s]:k.off[s+1]:k.off[s+1]] }
func (k *keyTable) id(s int) string  { return k.str[k.off[s]:k.off[s+1]] }

// valueCap fits any UC-3 value of a sensor key up to 20 bytes in either format.
const valueCap = 112

func (w *worker) record() *kgo.Record {
	if r, ok := w.pool.Get().(*kgo.Record); ok {
		return r
	}
	return &kgo.Record{Value: make([]byte, 0, valueCap)}
}

func (w *worker) recycle(r *kgo.Record) {
	v := r.Value[:0]
	*r = kgo.Record{Value: v}
	w.pool.Put(r)
}

// promise counts the outcome and recycles the record; kgo calls it serially.
func (w *worker) promise(r *kgo.Record, err error) {
	if err != nil {
		if w.firstErr.Load() == nil {
			msg := err.Error()
			w.firstErr.CompareAndSwap(nil, &msg)
		}
		w.failed.Add(1)
	} else {
		w.acked.Add(1)
		if b := r.Timestamp.Sub(w.sched.start) / time.Second; b >= 0 && int(b) < len(w.buckets) {
			w.buckets[b].Add(1)
		}
	}
	w.recycle(r)
}

// emit produces the j-th record of p.
func (w *worker) emit(ctx context.Context, p *Pacer, j int64) {
	s := p.Sensor(j)
	due := w.sched.start.Add(p.DueAt(j))
	r := w.record()
	r.Key = w.keys.key(s)
	r.Timestamp = due
	rec := uc3.ActivePowerRecord{Identifier: w.keys.id(s), Timestamp: due.UnixMilli(), ValueInW: w.sched.valueW}
	if w.sched.format == uc3.FormatJSON {
		r.Value = uc3.AppendJSON(r.Value[:0], rec)
	} else {
		r.Value = uc3.AppendConfluentAvro(r.Value[:0], w.sched.schemaID, rec)
	}
	w.produced.Add(1)
	w.prod.Produce(ctx, r, w.onDone)
}

// pacer state of one worker's production; only the loop goroutine uses it.
type pacing struct {
	w    *worker
	cur  *share
	p    *Pacer
	th   *throttle
	next int64         // next record of p to produce
	edge time.Duration // the records before edge were due at the last step
	due  int64         // records of p due at the last step
}

// step produces what is due at now, within the catch-up limit, and reports
// whether the schedule has ended. ctx is the records' context: cancelling it
// fails the records Kafka still buffers.
func (s *pacing) step(ctx context.Context, now time.Time) bool {
	w := s.w
	elapsed := now.Sub(w.sched.start)
	if elapsed < 0 {
		return false
	}
	end := min(elapsed, w.sched.duration)
	if sh := w.share.Load(); sh != s.cur {
		// Continue the schedule where it stands: records of sensors kept
		// stay exactly on schedule; sensors gained start now (their records
		// before now were another instance's).
		var from time.Duration
		switch {
		case s.p != nil && s.next < s.due:
			from = s.p.DueAt(s.next)
		case s.p != nil:
			from = s.edge
		case sh.epoch > 0 || elapsed > joinGrace:
			from = end
		}
		s.p, s.cur = NewPacer(sh.ranges, w.sched.sensors, w.sched.period, w.sched.seed), sh
		s.next = s.p.Due(from)
		w.assigned.Store(int64(s.p.Sensors()))
		if s.th == nil {
			s.th = newThrottle(s.p.Rate(), w.cfg.MaxCatchUp, w.cfg.CatchUpBurst, now)
		} else {
			s.th.setRate(s.p.Rate(), w.cfg.MaxCatchUp, w.cfg.CatchUpBurst)
		}
	}
	s.due = s.p.Due(end)
	n := s.th.allow(now, s.due-s.next)
	for i := range n {
		if i&255 == 255 && ctx.Err() != nil {
			break
		}
		w.emit(ctx, s.p, s.next)
		s.next++
	}
	s.edge = end
	w.backlog.Store(s.due - s.next)
	return elapsed >= w.sched.duration
}

// behind is how many due records were not produced.
func (s *pacing) behind() int64 { return s.due - s.next }

// loop paces records every tick until the end of the schedule or ctx ends,
// and returns how many records were due but not produced, and when it
// stopped. Records are produced with recCtx, which outlives a stop so the
// last records are still delivered.
func (w *worker) loop(ctx, recCtx context.Context) (behind int64, endedAt time.Duration) {
	tick := w.clock.NewTicker(w.cfg.Tick)
	defer tick.Stop()
	s := &pacing{w: w}
	for {
		select {
		case <-ctx.Done():
			return s.behind(), s.edge
		case now := <-tick.C():
			if s.step(recCtx, now) {
				return s.behind(), s.edge
			}
		}
	}
}

// progress is one per-second report of an instance.
type progress struct {
	at     time.Time
	sent   int64   // acknowledged so far
	errors int64   // failed so far
	rate   float64 // acknowledged records of the reported second of schedule
	final  bool
}

// monitorTick is how often the monitor looks at the counters.
const monitorTick = 50 * time.Millisecond

// run produces until the end of the schedule, ctx ends (stop), or Kafka fails,
// then waits (bounded) for the acknowledgements. report is called once per
// second of schedule, ReportLag after that second ends, with the records of
// that second Kafka acknowledged by then; the last second is reported by the
// caller after the client is closed (see finalRate). It returns the outcome
// and the first second not reported yet.
func (w *worker) run(ctx context.Context, report func(progress)) (outcome, int) {
	// A stop (ctx) ends the loop; an abort also fails the buffered records.
	recCtx, abortRecords := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abortRecords(nil)
	loopCtx, abortLoop := context.WithCancelCause(ctx)
	defer abortLoop(nil)
	abort := func(err error) {
		abortLoop(err)
		abortRecords(err)
	}
	type loopResult struct {
		behind  int64
		endedAt time.Duration
	}
	loopDone := make(chan loopResult, 1)
	go func() {
		b, e := w.loop(loopCtx, recCtx)
		loopDone <- loopResult{b, e}
	}()
	tick := w.clock.NewTicker(monitorTick)
	defer tick.Stop()

	start := w.clock.Now()
	nb := w.sched.buckets()
	k := max(1, int(start.Sub(w.sched.start)/time.Second)+1) // next report covers second k-1
	reportDue := func(now time.Time) {
		for k < nb && now.Sub(w.sched.start) >= time.Duration(k)*time.Second+w.cfg.ReportLag {
			report(progress{at: now, sent: w.acked.Load(), errors: w.failed.Load(), rate: float64(w.buckets[k-1].Load())})
			k++
		}
	}
	var out outcome
	lastAcked, lastChange := int64(-1), start
	for done := false; !done; {
		select {
		case r := <-loopDone:
			out.behind, out.endedAt, done = r.behind, r.endedAt, true
		case now := <-tick.C():
			reportDue(now)
			if out.aborted != nil {
				continue
			}
			a := w.acked.Load()
			if a != lastAcked {
				lastAcked, lastChange = a, now
			}
			outstanding := w.produced.Load() - a - w.failed.Load()
			switch {
			case w.failed.Load() > 0:
				out.aborted = errors.New(w.firstError())
			case outstanding > 0 && now.Sub(lastChange) >= w.cfg.DeliveryTimeout:
				out.aborted = fmt.Errorf("kafka acknowledged nothing for %s", now.Sub(lastChange).Round(time.Millisecond))
			}
			if out.aborted != nil {
				abort(out.aborted)
			}
		}
	}
	out.stopped = ctx.Err() != nil
	reportDue(w.clock.Now())
	flushFor := w.cfg.FlushTimeout
	if out.aborted != nil {
		flushFor = min(flushFor, w.cfg.DeliveryTimeout)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushFor)
	out.flush = w.prod.Flush(fctx)
	cancel()
	return out, k - 1
}

func (w *worker) firstError() string {
	if e := w.firstErr.Load(); e != nil {
		return *e
	}
	return "unknown error"
}

// settle waits (bounded) until every produced record's promise has run:
// the Kafka client may still be delivering promises when Flush or Close
// return.
func (w *worker) settle(within time.Duration) {
	deadline := time.Now().Add(within)
	for w.produced.Load() > w.acked.Load()+w.failed.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// finalRate is the acknowledged records per second of second b of the
// schedule, which production left at endedAt.
func (w *worker) finalRate(b int, endedAt time.Duration) float64 {
	if b < 0 || b >= len(w.buckets) {
		return 0
	}
	length := min(endedAt, w.sched.duration) - time.Duration(b)*time.Second
	length = min(length, time.Second)
	if length <= 0 {
		return 0
	}
	return float64(w.buckets[b].Load()) / length.Seconds()
}
