package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/service"
)

// job is this instance's part in one run.
type job struct {
	run    string
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	w         *worker // nil until built
	latest    *plan   // newest plan seen
	epoch     int     // of the share given to w
	applied   bool
	resume    []laneCkpt // this instance's checkpointed lanes, for its first share
	restarted bool       // this incarnation resumes from a checkpoint
	final     *status    // the last checkpoint, once the share is done
	// scheduled is closed once a plan with a start is seen; reshared is
	// poked when w is given a new share (to prepare it before the start).
	scheduled     chan struct{}
	scheduledSeen bool
	reshared      chan struct{}
}

// noteScheduledLocked closes scheduled once the latest plan has a start.
func (j *job) noteScheduledLocked() {
	if !j.scheduledSeen && j.latest != nil && j.latest.scheduled() {
		j.scheduledSeen = true
		close(j.scheduled)
	}
}

// prepareUntilScheduled prepares w's share and says so in a checkpoint
// (put), again whenever the share changes (a take-over before the start),
// until the leader has fixed the schedule's start — every owner prepared
// the latest share — and returns that plan.
func (j *job) prepareUntilScheduled(ctx context.Context, w *worker, now func() time.Time, put func(epoch int)) (*plan, error) {
	for {
		select {
		case <-j.reshared:
		default:
		}
		w.prepare(ctx, now())
		put(w.pace.epoch())
		select {
		case <-j.scheduled:
			return j.plan(), nil
		case <-j.reshared:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// finalStatus is the share's final checkpoint, once it is done: kept to be
// put back should NATS lose it before the leader has read it
// (restoreFinalStatuses).
func (j *job) finalStatus() (status, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.final == nil {
		return status{}, false
	}
	return *j.final, true
}

// setShare hands the worker this instance's share of a newer plan.
func (j *job) setShare(p *plan, instance string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.latest == nil || p.Epoch >= j.latest.Epoch {
		j.latest = p
	}
	j.noteScheduledLocked()
	j.applyLocked(instance)
}

func (j *job) applyLocked(instance string) {
	p := j.latest
	if j.w == nil || p == nil || (j.applied && p.Epoch <= j.epoch) {
		return
	}
	pieces := p.piecesOf(instance)
	if !j.applied && j.restarted {
		for i := range pieces {
			pieces[i].Late = true
		}
		pieces = resumeFrom(pieces, j.resume)
	}
	j.applied, j.epoch = true, p.Epoch
	j.w.share.Store(&share{epoch: p.Epoch, pieces: pieces})
	select {
	case j.reshared <- struct{}{}:
	default:
	}
}

func (j *job) plan() *plan {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.latest
}

func (g *Generator) startJob(ctx context.Context, p *plan) {
	run := p.Cmd.RunID
	g.mu.Lock()
	if _, ok := g.jobs[run]; ok || g.closing.Load() {
		g.mu.Unlock()
		return
	}
	jctx, cancel := context.WithCancel(ctx)
	j := &job{run: run, cancel: cancel, done: make(chan struct{}), latest: p, scheduled: make(chan struct{}), reshared: make(chan struct{}, 1)}
	j.noteScheduledLocked()
	g.jobs[run] = j
	g.mu.Unlock()
	go func() {
		defer close(j.done)
		defer cancel()
		g.runJob(jctx, j)
		g.pokeLeader()
	}()
}

func (g *Generator) pokeLeader() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

// runJob produces this instance's share of a run, checkpoints its progress
// every CheckpointInterval, and records its final count. After a restart it
// resumes from its checkpoint: counts continue, and its ranges are produced
// from their acked watermarks (back-filling what it missed while down).
func (g *Generator) runJob(ctx context.Context, j *job) {
	p := j.plan()
	run := p.Cmd.RunID
	logger := g.logger.With(zap.String("run_id", run))
	prev, found, err := g.readStatus(ctx, run, g.cfg.Instance)
	if err != nil {
		logger.Error("load share not started", zap.Error(err))
		return
	}
	if found && prev.Done {
		return // this instance finished its part before a restart
	}
	prepStart := g.clock.Now()
	base := status{Instance: g.cfg.Instance}
	if found {
		base = prev
		base.Restarts++
		logger.Warn("load share resumed from its checkpoint", zap.Int64("records_sent", prev.Sent), zap.Int("restarts", base.Restarts),
			zap.Any("lanes", prev.Lanes))
	}
	// Prepare everything the schedule needs before its start is fixed:
	// the key table, the lanes' pacers, a producer connected to the
	// brokers with the topic's metadata read.
	w := newWorker(g.cfg, g.clock, p.schedule()) // builds the key table
	if h := g.hooks.Step; h != nil {
		w.stepHook = func(elapsed time.Duration) { h(run, elapsed) }
	}
	j.mu.Lock()
	j.resume, j.restarted = prev.Lanes, found
	j.w = w
	j.applyLocked(g.cfg.Instance)
	j.mu.Unlock()
	snapshot := func() status { return j.snapshot(w, base) }
	// stored is the count of the last checkpoint stored: progress reports
	// say no more than it (see reporter), so a restart, which continues
	// from the checkpoint, never reports less than was reported.
	var stored atomic.Int64
	stored.Store(base.Sent)
	checkpoint := func() {
		st := snapshot()
		if g.putStatus(st, run) {
			for s := stored.Load(); st.Sent > s && !stored.CompareAndSwap(s, st.Sent); s = stored.Load() {
			}
		}
	}
	finish := func(st status, failed bool, reason string) { g.finishShare(ctx, j, st, failed, reason, logger) }

	cl, err := g.producer(ctx, p)
	if err != nil {
		finish(snapshot(), true, err.Error())
		return
	}
	w.prod = cl
	// The leader fixes the start once every owner has said it prepared
	// the plan's latest share.
	p, err = j.prepareUntilScheduled(ctx, w, g.clock.Now, func(epoch int) {
		if h := g.hooks.Prepared; h != nil {
			h(run)
		}
		base.Prepared, base.PreparedEpoch, base.PrepareMs = true, epoch, g.clock.Since(prepStart).Milliseconds()
		checkpoint()
		logger.Info("load share prepared", zap.Int("epoch", epoch), zap.Int64("prepare_ms", base.PrepareMs))
	})
	if err != nil {
		cl.Close()
		finish(snapshot(), false, "stopped before the schedule started")
		return
	}
	if !w.sched.start.Equal(p.start()) {
		w.sched.start = p.start() // nothing produced yet: the loop starts below
	}
	base.StartMs = p.StartMs
	logger.Info("load share started", zap.Int("epoch", p.Epoch), zap.Any("ranges", p.piecesOf(g.cfg.Instance)),
		zap.Int64("prepare_ms", base.PrepareMs), zap.Time("start", p.start()))
	progressQ := newPublishQueue(g.bus, logger)
	defer progressQ.close(5 * time.Second)
	report := g.reporter(p, w, base, progressQ, stored.Load)
	// Checkpoints, from now until the share ends.
	ckptCtx, stopCkpt := context.WithCancel(context.WithoutCancel(ctx))
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		service.Every(ckptCtx, g.clock, g.cfg.CheckpointInterval, nil, checkpoint)
	}()
	// Anchor the cumulative series where this incarnation starts, so it
	// can be interpolated anywhere in the load.
	anchor := "start"
	if base.Restarts > 0 {
		anchor = "resume-" + strconv.Itoa(base.Restarts)
	}
	runFrom := w.second(g.clock.Now()) // this incarnation's first second (-1: before the start)
	// The per-second load truth as its seconds become final, so the
	// seconds of an instance killed mid-load survive it: written only
	// when the share ended, a killed instance's were lost and the rate
	// check saw its seconds as a stall that never happened.
	truthDone := make(chan struct{})
	go func() {
		defer close(truthDone)
		next := max(0, runFrom)
		service.Every(ckptCtx, g.clock, truthInterval, nil, func() {
			// A second is final a second after its end: its on-time
			// count takes acknowledgements up to 500 ms past it.
			if upto := w.second(g.clock.Now()) - 1; upto > next {
				g.storeTruth(ctx, p, w, next, upto, logger)
				next = upto
			}
		})
	}()
	report(progress{id: anchor, at: maxTime(p.start(), g.clock.Now())})
	out, last := w.run(ctx, report)
	cl.Close() // fails whatever is still buffered
	w.settle(5 * time.Second)
	stopCkpt()
	<-ckptDone
	<-truthDone
	g.recordTruth(ctx, p, w, runFrom, logger)
	produced, acked := w.produced.Load(), w.acked.Load()
	undelivered := produced - acked
	report(progress{at: g.clock.Now(), sent: acked, errors: max(w.failed.Load(), undelivered), rate: w.finalRate(last, out.endedAt), final: true, id: "final"})
	st := snapshot()
	st.Errors = base.Errors + max(w.failed.Load(), undelivered)
	st.Behind = out.behind
	handedOver := out.stopped && g.closing.Load()
	if !handedOver {
		// Still due at the end and never produced. (On a shutdown, the
		// heirs produce them from this checkpoint instead.)
		st.Missed += out.behind
	}
	failed, reason := shareOutcome(out, produced, undelivered, handedOver, g.cfg.FlushTimeout)
	finish(st, failed, reason)
}

// recordTruth stores this incarnation's per-second counts — records sent,
// records Kafka acknowledged and their largest lateness, by wall-clock
// second from the schedule's start, and the records of each second of
// the schedule acknowledged on time — as run metrics (pkg/kafkasignals), and
// logs the largest lateness. Before the share's final checkpoint: the
// leader sums the load up, and the analyzer reads them, only after it.
func (g *Generator) recordTruth(ctx context.Context, p *plan, w *worker, from int, logger *zap.Logger) {
	from = max(0, from)
	sent, acked, late, onTime := w.truth(from)
	var worst float64
	for _, l := range late {
		worst = max(worst, l)
	}
	logger.Info("load share delivery", zap.Float64("max_lateness_ms", worst), zap.Float64s("acked_per_second", acked))
	g.insertTruth(ctx, p, from, sent, acked, late, onTime, logger)
}

// truthInterval is how often the load truth's final seconds are written
// while the share runs (storeTruth): one insert a second per instance.
const truthInterval = time.Second

// storeTruth writes the per-second counts of seconds [from, to) while the
// share runs. The share's end writes them all again (recordTruth): the
// store reads a point written twice once (RunMetricSeries takes the
// largest of a second's values, and the counts only grow).
func (g *Generator) storeTruth(ctx context.Context, p *plan, w *worker, from, to int, logger *zap.Logger) {
	if g.sink == nil {
		return
	}
	n := to - from
	sent, acked, late, onTime := w.truth(from)
	cut := func(s []float64) []float64 { return s[:min(len(s), n)] }
	g.insertTruth(ctx, p, from, cut(sent), cut(acked), cut(late), cut(onTime), logger)
}

// insertTruth stores per-second counts starting at second from.
func (g *Generator) insertTruth(ctx context.Context, p *plan, from int, sent, acked, late, onTime []float64, logger *zap.Logger) {
	if g.sink == nil {
		return
	}
	t := kafkasignals.Target{ExperimentID: p.Cmd.ExperimentID, RunID: p.Cmd.RunID}
	startMs := p.StartMs + int64(from)*1000
	inst := map[string]string{"instance": g.cfg.Instance}
	pts := kafkasignals.PerSecondPoints(t, kafkasignals.MetricLoadSent, inst, startMs, sent)
	pts = append(pts, kafkasignals.PerSecondPoints(t, kafkasignals.MetricLoadAcked, inst, startMs, acked)...)
	pts = append(pts, kafkasignals.PerSecondPoints(t, kafkasignals.MetricLoadLatenessMax, inst, startMs, late)...)
	pts = append(pts, kafkasignals.PerSecondPoints(t, kafkasignals.MetricLoadOnTime, inst, startMs, onTime)...)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := g.sink.InsertRunMetrics(sctx, pts); err != nil {
		logger.Warn("store the load's per-second delivery failed; the analyzer cannot check the load's rate", zap.Error(err))
	}
}

// snapshot is the share's checkpoint now: base (the previous incarnation's
// counts) plus those of w, this incarnation's worker.
func (j *job) snapshot(w *worker, base status) status {
	st := base
	st.Sent += w.acked.Load()
	st.Errors += w.failed.Load()
	st.Produced += w.produced.Load()
	st.Missed += w.skipped.Load()
	st.Backfilled += w.backfilled.Load()
	j.mu.Lock()
	st.Epoch = j.epoch
	j.mu.Unlock()
	if lanes, shaped := w.checkpoint(); shaped {
		st.Lanes = lanes
	} // else: keep the previous incarnation's lanes, nothing produced since
	return st
}

// shareOutcome is whether a share that ended with out failed, and why (""
// for a share that simply ran to its end).
func shareOutcome(out outcome, produced, undelivered int64, handedOver bool, flushTimeout time.Duration) (failed bool, reason string) {
	switch {
	case out.aborted != nil:
		return true, fmt.Sprintf("%d of %d records not delivered: %v", undelivered, produced, out.aborted)
	case undelivered > 0:
		return true, fmt.Sprintf("%d of %d records not delivered within %s: %v", undelivered, produced, flushTimeout, out.flush)
	case handedOver:
		return false, "instance shut down; its ranges were handed over"
	case out.stopped:
		return false, "stopped"
	case out.behind > 0:
		return false, fmt.Sprintf("%d records due were not produced (behind schedule)", out.behind)
	}
	return false, ""
}

// finishShare records the share's final checkpoint; a failed share stops
// the run's load on every instance.
func (g *Generator) finishShare(ctx context.Context, j *job, st status, failed bool, reason string, logger *zap.Logger) {
	st.Done, st.Failed, st.Reason = true, failed, reason
	st.EndMs = g.clock.Now().UnixMilli()
	st.UpdatedMs = st.EndMs
	j.mu.Lock()
	j.final = &st
	j.mu.Unlock()
	g.writeStatus(st, j.run)
	if failed {
		// The run has failed: stop every instance's share now rather
		// than at the end of the phase.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := g.markStopped(sctx, j.run); err != nil {
			logger.Warn("stop failed run", zap.Error(err))
		}
		cancel()
	}
	logger.Info("load share finished", zap.Int64("records_sent", st.Sent), zap.Int64("errors", st.Errors),
		zap.Int64("behind", st.Behind), zap.Int64("missed", st.Missed), zap.Int64("backfilled", st.Backfilled),
		zap.Bool("failed", failed), zap.String("reason", reason))
}

// producer is a Kafka client for the run's input topic, once a broker
// answered. No kgo.RecordDeliveryTimeout: kgo measures it from the
// record's timestamp — the scheduled time — so it would fail back-filled
// records at once. The worker's monitor fails the load instead when Kafka
// acknowledges nothing for a while, and closing the client fails what is
// still buffered.
func (g *Generator) producer(ctx context.Context, p *plan) (*kgo.Client, error) {
	cl, err := g.kafkaClient(p.Cmd.Kafka.Brokers, kgo.DefaultProduceTopic(p.Cmd.Kafka.InputTopic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return nil, fmt.Errorf("kafka client for %v: %v", p.Cmd.Kafka.Brokers, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka brokers %v unreachable: %v", p.Cmd.Kafka.Brokers, err)
	}
	// The topic's partitions and leaders, through this client's brokers
	// (connections opened before the start). A topic not created yet is
	// created on the first record, as before.
	if _, err := kafkasignals.HighWatermark(pctx, kadm.NewClient(cl), p.Cmd.Kafka.InputTopic); err != nil && !errors.Is(err, kafkasignals.ErrUnknownTopic) {
		cl.Close()
		return nil, fmt.Errorf("read metadata of topic %s: %v", p.Cmd.Kafka.InputTopic, err)
	}
	return cl, nil
}

// reporter returns the function the worker reports progress through: it
// updates the metrics and queues a load.progress with the cumulative
// counts (base's included). Until the final report, the count is at most
// that of the last stored checkpoint (stored): records acknowledged after
// it are reported with the next one. A report above it, then a kill, made
// the restarted instance — which continues from the checkpoint — report
// less than its predecessor had (6,986 after 6,998 in a CI run).
func (g *Generator) reporter(p *plan, w *worker, base status, q *publishQueue, stored func() int64) func(progress) {
	var lastSent, lastFailed, lastAssigned, lastBacklog int64
	return func(pr progress) {
		if !pr.final {
			pr.sent = max(lastSent, min(pr.sent, stored()-base.Sent))
		}
		g.m.sent.Add(float64(pr.sent - lastSent))
		g.m.failed.Add(float64(pr.errors - lastFailed))
		lastSent, lastFailed = pr.sent, pr.errors
		g.m.rate.Set(pr.rate)
		a, b := w.assigned.Load(), w.backlog.Load()
		if pr.final {
			a, b = 0, 0
		}
		g.m.assigned.Add(float64(a - lastAssigned))
		g.m.backlog.Add(float64(b - lastBacklog))
		lastAssigned, lastBacklog = a, b
		q.add(events.LoadProgress{ExperimentID: p.Cmd.ExperimentID, RunID: p.Cmd.RunID, Instance: g.cfg.Instance,
			TsMs: pr.at.UnixMilli(), RecordsSent: base.Sent + pr.sent, Errors: base.Errors + pr.errors, RatePerSec: pr.rate},
			progressID(p.Cmd.RunID, g.cfg.Instance, pr.id))
	}
}

// progressID is a load.progress report's message id: the same report
// published again (a retry after a NATS hiccup, or a restarted instance
// reporting a second again) is de-duplicated by the stream.
func progressID(run, instance, report string) string {
	return "load.progress:" + run + ":" + instance + ":" + report
}

// onPlan follows the plans: it starts, re-shares and stops this instance's
// jobs accordingly.
func (g *Generator) onPlan(ctx context.Context, e jetstream.KeyValueEntry) {
	run := e.Key()[len("plan."):]
	if e.Operation() != jetstream.KeyValuePut {
		g.mu.Lock()
		pe, known := g.plans[run]
		if known && bus.KeyLost(e) {
			// Nobody deleted it: NATS lost the bucket and the bus declared
			// it again, empty. The load goes on; the leader writes the plan
			// back from its copy (this one, should it be this instance).
			pe.lost = true
			g.plans[run] = pe
			g.mu.Unlock()
			g.logger.Warn("load plan lost with its kv bucket; the leader writes it back", zap.String("run_id", run))
			g.pokeLeader()
			return
		}
		delete(g.plans, run)
		g.mu.Unlock()
		return
	}
	var p plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		g.logger.Error("undecodable load plan", zap.String("run_id", run), zap.Error(err))
		return
	}
	g.mu.Lock()
	if p.Finished {
		delete(g.plans, run)
	} else {
		g.plans[run] = planEntry{p: &p, rev: e.Revision()}
	}
	j := g.jobs[run]
	g.mu.Unlock()
	switch {
	case j != nil && p.Finished:
		// The load is summed up: nothing of this share is needed any more
		// (its key table and counters can be large), and a finished plan
		// never starts a job again.
		j.cancel()
		go g.forgetJob(run, j)
	case j != nil && p.Stopped:
		j.cancel()
	case j != nil:
		j.setShare(&p, g.cfg.Instance)
	case p.Stopped || p.Finished || !p.participates(g.cfg.Instance):
	default:
		// Also after the end of the schedule: an instance restarted late
		// still reports its part (what it missed) from its checkpoint.
		g.startJob(ctx, &p)
	}
}

// forgetJob drops a finished job once it has stopped.
func (g *Generator) forgetJob(run string, j *job) {
	<-j.done
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.jobs[run] == j {
		delete(g.jobs, run)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
