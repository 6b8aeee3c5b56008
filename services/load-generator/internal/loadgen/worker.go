package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// producer is what a worker needs of a Kafka client. Produce must call the
// promise exactly once per record; after that the worker reuses the record.
type producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

var _ producer = (*kgo.Client)(nil)

// share is one instance's part of a load at one epoch of the plan: its
// ranges, each with the schedule time to produce it from.
type share struct {
	epoch  int
	pieces []piece
}

// schedule is what every instance of a load agrees on.
type schedule struct {
	start    time.Time // of the schedule, whole milliseconds; zero until fixed
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

// outcome is how a worker's production ended.
type outcome struct {
	behind  int64         // records due by the end that were never produced
	endedAt time.Duration // schedule time when production stopped
	aborted error         // Kafka failure that ended the load early
	flush   error
	stopped bool
}

// worker produces one instance's share of one load. The hot path allocates
// once per emitChunk records (see record); keys and identifiers come from
// one table built up front.
//
// The share is produced in lanes (lane.go): ranges that are produced from the
// same point of the schedule. A fresh load has one lane; a range taken over
// from a dead instance, or resumed after a restart, starts a lane of its own
// at the previous owner's acked watermark and back-fills from there. Each
// lane tracks which of its records Kafka acknowledged, which gives the acked
// watermark the instance checkpoints.
type worker struct {
	cfg   Config
	clock clock.WithTicker
	prod  producer
	sched schedule
	keys  uc3.KeyTable
	slot  time.Duration // width of the lanes' acknowledgement slots

	share atomic.Pointer[share]

	produced, acked, failed atomic.Int64
	backfilled, skipped     atomic.Int64   // late records acked; records too late to produce
	backlog, assigned       atomic.Int64   // for metrics
	buckets                 []atomic.Int64 // acknowledged records per second of schedule
	firstErr                atomic.Pointer[string]
	// Per wall-clock second from the schedule's start (the last one also
	// holds everything later): records handed to Kafka, records Kafka
	// acknowledged, and the largest lateness (ack time − scheduled time,
	// ns) among those. This is the load's truth, which the records'
	// timestamps (their scheduled times) hide.
	sentAt, ackedAt, lateMax []atomic.Int64
	// onTime counts, per second of schedule, its records Kafka
	// acknowledged by ReportLag after its end (kafkasignals.MetricLoadOnTime).
	onTime []atomic.Int64
	// nowNs is the time as the worker last saw it (unix ns): set at every
	// pacing step (each Tick, 2 ms) and every monitor tick (50 ms), read by
	// the promise instead of the clock — reading the clock per record cost
	// ~90 ns here, doubling the hot path. Acknowledgement times are thus
	// late by at most a tick while producing (50 ms during the final flush
	// or a stalled pacing loop). startNs is the schedule's start.
	nowNs, startNs atomic.Int64

	lanesMu sync.Mutex
	lanes   []*lane // current lanes, for checkpoints

	// pace and the records' context are built by prepare, before the
	// schedule starts; stepHook is Hooks.Step for this run.
	pace         *pacing
	recCtx       context.Context
	abortRecords context.CancelCauseFunc
	stepHook     func(elapsed time.Duration)

	slab   []slabRecord // records not yet handed out; loop goroutine only
	onDone func(*kgo.Record, error)
}

func newWorker(cfg Config, clk clock.WithTicker, sched schedule) *worker {
	// Acknowledgements may come until the flush gives up.
	truth := sched.buckets() + int((cfg.FlushTimeout+cfg.DeliveryTimeout)/time.Second) + 2
	w := &worker{cfg: cfg, clock: clk, sched: sched, keys: uc3.NewKeyTable(sched.sensors), buckets: make([]atomic.Int64, sched.buckets()),
		slot: slotWidth(sched.duration), sentAt: make([]atomic.Int64, truth), ackedAt: make([]atomic.Int64, truth), lateMax: make([]atomic.Int64, truth),
		onTime: make([]atomic.Int64, sched.buckets())}
	w.onDone = w.promise
	return w
}

// valueCap fits any UC-3 value of a sensor key up to 20 bytes in either format.
const valueCap = 112

// slabRecord is a record with room for its value.
type slabRecord struct {
	r kgo.Record
	v [valueCap]byte
}

// record hands out the next record of a slab of emitChunk fresh ones; the
// garbage collector frees a slab once Kafka is done with all of its records.
// Records used to be recycled through a sync.Pool from the promise, which
// runs on another core: every reused record's cache lines then had to move
// back to the pacing loop's core before it could write them, and the first
// store into each was the largest cost of the hot path (the generator
// reached 0.70× of plain franz-go with the pool, 0.73× allocating each
// record as franz-go users do; BenchmarkLoadGeneratorAgainstRawFranzGo).
// Fresh memory is zeroed by the allocating core and so is in its cache.
func (w *worker) record() *kgo.Record {
	if len(w.slab) == 0 {
		w.slab = make([]slabRecord, emitChunk)
	}
	s := &w.slab[0]
	w.slab = w.slab[1:]
	s.r.Value = s.v[:0]
	return &s.r
}

// laneKey is the record context key of the lane a record belongs to.
type laneKey struct{}

// promise counts the outcome; kgo calls it serially.
func (w *worker) promise(r *kgo.Record, err error) {
	if err != nil {
		if w.firstErr.Load() == nil {
			msg := err.Error()
			w.firstErr.CompareAndSwap(nil, &msg)
		}
		w.failed.Add(1)
	} else {
		w.acked.Add(1)
		since := w.nowNs.Load() - w.startNs.Load() // since the start, as last seen
		if since >= 0 {
			k := min(int(since/int64(time.Second)), len(w.ackedAt)-1)
			w.ackedAt[k].Add(1)
			late := w.nowNs.Load() - r.Timestamp.UnixNano()
			for m := w.lateMax[k].Load(); late > m && !w.lateMax[k].CompareAndSwap(m, late); m = w.lateMax[k].Load() {
			}
		}
		at := r.Timestamp.Truncate(time.Millisecond).Sub(w.sched.start) // kgo truncates; a test producer may not
		if b := at / time.Second; b >= 0 && int(b) < len(w.buckets) {
			w.buckets[b].Add(1)
			if since <= int64((b+1)*time.Second+w.cfg.ReportLag) {
				w.onTime[b].Add(1)
			}
		}
		if r.Context != nil {
			if l, ok := r.Context.Value(laneKey{}).(*lane); ok {
				l.acked[l.slotOf(at)].Add(1)
				if at < l.lateUntil {
					w.backfilled.Add(1)
				}
			}
		}
	}
}

// see records now as the time the promise counts acknowledgements at.
func (w *worker) see(now time.Time) { w.nowNs.Store(now.UnixNano()) }

// second is the index of the wall-clock second of t from the schedule's
// start in the truth counters (the last one takes everything later); -1
// before the start.
func (w *worker) second(t time.Time) int {
	d := t.Sub(w.sched.start)
	if d < 0 {
		return -1
	}
	return min(int(d/time.Second), len(w.ackedAt)-1)
}

// truth returns the per-second counters from second `from` on (an
// incarnation's own seconds: a restarted instance has no count of those
// before it) to the last one with anything, at least to the end of the
// schedule.
func (w *worker) truth(from int) (sent, acked, lateMs, onTime []float64) {
	last := w.sched.buckets() - 1
	for k := range w.ackedAt {
		if w.ackedAt[k].Load() > 0 || w.sentAt[k].Load() > 0 {
			last = max(last, k)
		}
	}
	for k := max(0, from); k <= last; k++ {
		sent = append(sent, float64(w.sentAt[k].Load()))
		acked = append(acked, float64(w.ackedAt[k].Load()))
		lateMs = append(lateMs, float64(w.lateMax[k].Load())/1e6)
	}
	for k := max(0, from); k < len(w.onTime); k++ {
		onTime = append(onTime, float64(w.onTime[k].Load()))
	}
	return sent, acked, lateMs, onTime
}

// emit produces the j-th record of lane l.
func (w *worker) emit(l *lane, j int64) {
	s := l.p.Sensor(j)
	at := l.p.DueAt(j)
	due := w.sched.start.Add(at)
	r := w.record()
	key, id := w.keys.Key(s)
	r.Key = key
	r.Timestamp = due
	r.Context = l.rctx
	rec := uc3.ActivePowerRecord{Identifier: id, Timestamp: due.UnixMilli(), ValueInW: w.sched.valueW}
	if w.sched.format == uc3.FormatJSON {
		r.Value = uc3.AppendJSON(r.Value[:0], rec)
	} else {
		r.Value = uc3.AppendConfluentAvro(r.Value[:0], w.sched.schemaID, rec)
	}
	w.prod.Produce(l.rctx, r, w.onDone)
}

// emitChunk is the most records emitted between two looks at the records'
// context, and counted with one atomic add per slot.
const emitChunk = 256

// count publishes records [from, from+n) of lane l as produced — in the
// per-slot counts and the total — before they are emitted, so an
// acknowledgement never finds its slot short. One add per slot the records
// span, not two per record: each locked add waits for the record's stores
// before it to drain, and counting per record was a fifth of the hot path.
func (w *worker) count(l *lane, from, n int64) {
	// Kafka keeps whole milliseconds of the timestamp: count each record
	// in the slot the promise will find it in.
	cur, run := -1, int64(0)
	for j := from; j < from+n; j++ {
		if s := l.slotOf(l.p.DueAt(j).Truncate(time.Millisecond)); s != cur {
			if run > 0 {
				l.produced[cur].Add(run)
			}
			cur, run = s, 0
		}
		run++
	}
	if run > 0 {
		l.produced[cur].Add(run)
	}
	w.produced.Add(n)
}

// pacing is the production state of one worker; only the loop goroutine
// uses it.
type pacing struct {
	w     *worker
	cur   *share
	lanes []*lane
	order []*lane // lanes by priority, rebuilt every step
	th    *throttle
	edge  time.Duration // the records before edge were due at the last step
	// stop, set by the loop, ends a step between two chunks: behind
	// schedule a step may emit a whole catch-up burst, and a Kafka client
	// with a full buffer makes each record wait, so a stop must not wait
	// for the step to end.
	stop context.Context
}

// step produces what is due at now, within the catch-up limit, and reports
// whether the schedule has ended. ctx is the records' context: cancelling it
// fails the records Kafka still buffers.
func (s *pacing) step(ctx context.Context, now time.Time) bool {
	w := s.w
	w.see(now)
	elapsed := now.Sub(w.sched.start)
	if elapsed < 0 {
		return false
	}
	end := min(elapsed, w.sched.duration)
	if sh := w.share.Load(); sh != s.cur {
		s.reshape(ctx, sh, end, now)
	}
	var want, onTime int64
	for _, l := range s.lanes {
		l.due = l.p.Due(end)
		want += l.due - l.next
		// Records that fell due since the last step, less than
		// LateTolerance ago, are on schedule; the step lets out as many
		// without tokens (a lane produces in order, so they may be older
		// ones of its backlog: the count is what keeps to the schedule).
		onTime += max(0, l.due-l.p.Due(max(s.edge, end-w.cfg.LateTolerance)))
	}
	// Freshest lane first: records on schedule go out on time, and what
	// the throttle leaves goes to back-filling the oldest gaps.
	order := append(s.order[:0], s.lanes...)
	for i := 1; i < len(order); i++ {
		for k := i; k > 0 && order[k].position(end) > order[k-1].position(end); k-- {
			order[k], order[k-1] = order[k-1], order[k]
		}
	}
	s.order = order
	allowed := s.th.allow(now, want, onTime)
	n := allowed
lanes:
	for _, l := range order {
		for k := min(n, l.due-l.next); k > 0; {
			c := min(k, emitChunk)
			w.count(l, l.next, c)
			for j := l.next; j < l.next+c; j++ {
				w.emit(l, j)
			}
			l.next += c
			k -= c
			n -= c
			if ctx.Err() != nil || s.stopped() {
				l.nextPub.Store(l.next)
				break lanes
			}
		}
		l.nextPub.Store(l.next)
	}
	if k := w.second(now); k >= 0 && allowed > n {
		w.sentAt[k].Add(allowed - n)
	}
	s.edge = end
	w.backlog.Store(s.behind())
	return elapsed >= w.sched.duration
}

func (s *pacing) stopped() bool { return s.stop != nil && s.stop.Err() != nil }

// reshape adopts a new share: lanes whose ranges are all kept continue as
// they are; a lane that lost ranges continues with the rest from where it
// stands; ranges new to this instance start a lane at their piece's start
// (the previous owner's acked watermark, or the schedule start).
func (s *pacing) reshape(ctx context.Context, sh *share, end time.Duration, now time.Time) {
	w := s.w
	want := make([]Range, len(sh.pieces))
	for i, pc := range sh.pieces {
		want[i] = pc.Range
	}
	var lanes []*lane
	var have []Range
	for _, l := range s.lanes {
		keep := intersect(l.ranges, want)
		switch {
		case len(keep) == 0:
		case slices.Equal(keep, l.ranges):
			lanes = append(lanes, l)
		default:
			pos := l.position(end)
			nl := w.newLane(ctx, keep, pos, end, pos)
			nl.parent, nl.lateUntil = l, l.lateUntil
			lanes = append(lanes, nl)
		}
		have = append(have, keep...)
	}
	// New ranges, grouped by where they start.
	type start struct {
		from, produced time.Duration
		late           bool
	}
	byStart := map[start][]Range{}
	var starts []start
	for _, pc := range sh.pieces {
		for _, r := range subtract([]Range{pc.Range}, have) {
			k := start{pc.From, max(pc.From, pc.Produced), pc.Late}
			if _, ok := byStart[k]; !ok {
				starts = append(starts, k)
			}
			byStart[k] = append(byStart[k], r)
		}
	}
	slices.SortFunc(starts, func(a, b start) int { return cmp.Compare(a.from, b.from) })
	for _, k := range starts {
		l := w.newLane(ctx, byStart[k], k.from, end, k.produced)
		if !k.late {
			l.lateUntil = 0
		}
		lanes = append(lanes, l)
	}
	s.lanes, s.cur = lanes, sh
	s.order = make([]*lane, 0, len(lanes))
	w.lanesMu.Lock()
	w.lanes = append(make([]*lane, 0, len(lanes)), lanes...) // non-nil: shaped
	w.lanesMu.Unlock()
	var sensors int
	var rate float64
	for _, l := range lanes {
		sensors += l.p.Sensors()
		rate += l.p.Rate()
	}
	w.assigned.Store(int64(sensors))
	if s.th == nil {
		s.th = newThrottle(rate, w.cfg.MaxCatchUp, w.cfg.CatchUpBurst, w.cfg.LateTolerance, now)
	} else {
		s.th.setRate(rate, w.cfg.MaxCatchUp, w.cfg.CatchUpBurst)
	}
}

// epoch is the plan epoch of the share the lanes produce; -1 before any.
func (s *pacing) epoch() int {
	if s.cur == nil {
		return -1
	}
	return s.cur.epoch
}

// behind is how many due records were not produced.
func (s *pacing) behind() int64 {
	var n int64
	for _, l := range s.lanes {
		n += max(0, l.due-l.next)
	}
	return n
}

// prepare builds, before the schedule starts, what producing the share
// given so far needs besides the key table (built by newWorker): its lanes,
// whose pacers sort every sensor's phase — seconds for millions of
// sensors, which must not be spent after the start. It also makes the
// records' context, which outlives a stop (ctx) so the last records are
// still delivered. A share that changes later (a take-over) is reshaped
// while producing.
func (w *worker) prepare(ctx context.Context, now time.Time) {
	if w.pace == nil {
		w.recCtx, w.abortRecords = context.WithCancelCause(context.WithoutCancel(ctx))
		w.pace = &pacing{w: w}
	}
	if sh := w.share.Load(); sh != nil && sh != w.pace.cur {
		var elapsed time.Duration // 0 before a start is fixed
		if !w.sched.start.IsZero() {
			elapsed = min(max(0, now.Sub(w.sched.start)), w.sched.duration)
		}
		w.pace.reshape(w.recCtx, sh, elapsed, now)
	}
}

// loop paces records every tick until the end of the schedule or ctx ends,
// and returns how many records were due but not produced, and when it
// stopped. Records are produced with recCtx.
func (w *worker) loop(ctx, recCtx context.Context) (behind int64, endedAt time.Duration) {
	tick := w.clock.NewTicker(w.cfg.Tick)
	defer tick.Stop()
	s := w.pace
	s.stop = ctx
	for {
		select {
		case <-ctx.Done():
			return s.behind(), s.edge
		case now := <-tick.C():
			if w.stepHook != nil {
				w.stepHook(now.Sub(w.sched.start))
				now = w.clock.Now()
			}
			if s.step(recCtx, now) {
				return s.behind(), s.edge
			}
		}
	}
}

// checkpoint is the progress of every lane: what a restart or an heir
// resumes from. shaped is false until the worker has taken its first share
// (before the schedule starts): it has no lanes of its own to report yet.
func (w *worker) checkpoint() (lanes []laneCkpt, shaped bool) {
	w.lanesMu.Lock()
	defer w.lanesMu.Unlock()
	if w.lanes == nil {
		return nil, false
	}
	out := make([]laneCkpt, 0, len(w.lanes))
	for _, l := range w.lanes {
		out = append(out, laneCkpt{Ranges: l.ranges, AckedNs: int64(l.watermark()), ProducedNs: int64(l.producedTo())})
	}
	return out, true
}

// progress is one per-second report of an instance.
type progress struct {
	// id names the report for de-duplication: "s<second>" for the report
	// of a second of the schedule, "start"/"resume-<n>" for the anchor of
	// an incarnation, "final".
	id     string
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
	w.prepare(ctx, w.clock.Now()) // done already unless a test skipped it
	w.startNs.Store(w.sched.start.UnixNano())
	w.see(w.clock.Now())
	recCtx, abortRecords := w.recCtx, w.abortRecords
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
			report(progress{id: "s" + strconv.Itoa(k-1), at: now, sent: w.acked.Load(), errors: w.failed.Load(), rate: float64(w.buckets[k-1].Load())})
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
			w.see(now)
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
	if out.aborted == nil {
		out.flush, out.aborted = w.flush(ctx, tick, lastAcked, lastChange)
	}
	// After an abort nothing is flushed: Kafka is not acknowledging, and
	// closing the client fails what it still buffers.
	return out, k - 1
}

// flush waits for the buffered records' acknowledgements, at most
// FlushTimeout, and gives up — an outage — when Kafka acknowledges nothing
// for DeliveryTimeout while records are outstanding.
func (w *worker) flush(ctx context.Context, tick clock.Ticker, lastAcked int64, lastChange time.Time) (flushErr, aborted error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FlushTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.prod.Flush(fctx) }()
	for {
		select {
		case err := <-done:
			return err, aborted
		case now := <-tick.C():
			w.see(now)
			if aborted != nil {
				continue
			}
			if a := w.acked.Load(); a != lastAcked {
				lastAcked, lastChange = a, now
			}
			if w.produced.Load()-lastAcked-w.failed.Load() > 0 && now.Sub(lastChange) >= w.cfg.DeliveryTimeout {
				aborted = fmt.Errorf("kafka acknowledged nothing for %s", now.Sub(lastChange).Round(time.Millisecond))
				cancel()
			}
		}
	}
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
