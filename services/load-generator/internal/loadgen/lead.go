package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/service"
)

// lead runs the leader's duties whenever this instance is the live instance
// with the smallest name: every PollInterval (no I/O unless there is
// something to do), and at once when a job of this instance ends.
func (g *Generator) lead(ctx context.Context) {
	service.Every(ctx, g.clock, g.cfg.PollInterval, g.poke, func() {
		if g.reconnected() { // before judging: a reconnect holds judgements off
			g.restoreFinalStatuses(ctx)
		}
		alive, stable := g.view.view()
		g.m.members.Set(float64(len(alive)))
		names := sortedKeys(alive)
		leader := len(names) > 0 && names[0] == g.cfg.Instance
		g.mu.Lock()
		plans := make([]planEntry, 0, len(g.plans))
		for _, e := range g.plans {
			plans = append(plans, e)
		}
		g.mu.Unlock()
		for _, e := range plans {
			if !leader {
				g.stopSampler(e.p.Cmd.RunID, false)
				continue
			}
			g.leadRun(ctx, e, alive, stable)
		}
	})
}

// restoreFinalStatuses puts back, after a reconnect, the final checkpoint
// of each share of this instance that is done while its load is not
// summarized yet, when NATS lost it (a server back with an empty store;
// the bus re-creates the bucket empty). A running share writes its next
// checkpoint anyway; a done one writes none, and without it the leader
// would wait for this instance until the load's deadline and fail it.
func (g *Generator) restoreFinalStatuses(ctx context.Context) {
	g.mu.Lock()
	finals := map[string]status{}
	for run, j := range g.jobs {
		if _, open := g.plans[run]; !open {
			continue
		}
		if st, ok := j.finalStatus(); ok {
			finals[run] = st
		}
	}
	g.mu.Unlock()
	for run, st := range finals {
		cur, found, err := g.statusOf(ctx, run, g.cfg.Instance)
		switch {
		case err != nil:
			g.logger.Warn("read own final load checkpoint after a reconnect failed", zap.String("run_id", run), zap.Error(err))
		case !found || !cur.Done:
			// Lost with the bucket, or the final write failed during the
			// outage and an earlier checkpoint stands: the leader would
			// wait for this instance until the load times out.
			g.logger.Warn("own final load checkpoint missing after a reconnect; putting it back", zap.String("run_id", run), zap.Bool("found", found))
			g.writeStatus(st, run)
		}
	}
}

// leadRun hands the ranges of dead instances to live ones while the load
// runs, and publishes the summary once every participant is done.
func (g *Generator) leadRun(ctx context.Context, e planEntry, alive map[string]bool, stable bool) {
	p, run := e.p, e.p.Cmd.RunID
	logger := g.logger.With(zap.String("run_id", run))
	now := g.clock.Now()
	// Sample as long as this instance leads an unfinished load: a new
	// leader starts at once, so the series has no hole at a leader change.
	g.ensureSampler(ctx, p)
	if e.lost {
		g.writeBack(ctx, e, logger)
		return // the next round acts on the plan written back, at its revision
	}
	if !p.scheduled() && !p.Stopped {
		g.leadPreparation(ctx, e, alive, stable, logger)
		return
	}
	if !p.Stopped && now.Before(p.end()) {
		if stable {
			g.takeOver(ctx, e, alive, logger)
		}
		return
	}
	if !stable {
		return // a participant that looks dead may only not have heartbeated again yet
	}
	var sts []status
	var missing, lost []string
	var uncovered, unfinished, unfinishedSent int64
	complete := true
	for _, i := range p.Participants {
		s, found, err := g.statusOf(ctx, run, i)
		if err != nil {
			logger.Warn("read load checkpoint failed; re-checking next round", zap.String("of", i), zap.Error(err))
			return
		}
		switch {
		case found && s.Done:
			sts = append(sts, s)
		case alive[i]:
			complete = false
			unfinished, unfinishedSent = unfinished+s.Produced, unfinishedSent+s.Sent // zero when not found
		case found:
			sts, lost = append(sts, s), append(lost, i)
		default:
			missing = append(missing, i)
		}
		if !(found && s.Done) && !alive[i] && !p.Stopped {
			// Ranges a dead instance still owns: nobody produced them
			// after its last checkpoint.
			uncovered += dueBetween(resumeFrom(p.piecesOf(i), s.Lanes), p.Cmd.Workload.Sensors, time.Duration(p.PeriodNs), p.Seed, p.duration())
		}
	}
	end := p.end()
	if !p.scheduled() { // stopped while preparing
		end = time.UnixMilli(p.AcceptedMs).Add(g.cfg.PrepareTimeout)
	}
	deadline := end.Add(g.cfg.FlushTimeout + g.cfg.DeliveryTimeout + 2*g.cfg.MemberTTL + 5*time.Second)
	timedOut := now.After(deadline)
	if !complete && !timedOut {
		return
	}
	failed := !complete || slices.ContainsFunc(sts, func(s status) bool { return s.Failed })
	// The input topic's last high-water mark sample must lie past the
	// measured window's end, which the scheduler times from its own clock
	// and events — tens of milliseconds after this schedule's end. Without
	// a sample beyond it the analyzer cannot count the window at the broker
	// and falls back to the generators' count (a new user saw that in 13
	// of 47 runs). So: one sample now, as the load's last record is
	// acknowledged (the topic's final count, at the load's end), and the
	// final one a sampling interval later, past the window's end; between
	// the two the count stands still, so the window's end interpolates
	// exactly. The summary goes out after the final one.
	if !failed && !p.Stopped && g.sink != nil && g.cfg.RecordKafkaSignals && now.Before(p.end().Add(g.cfg.SignalInterval)) {
		g.sampleLoadEnd(run)
		return // the next round
	}
	acc := account{plan: p, statuses: sts, missing: missing, lost: lost, uncovered: uncovered, timedOut: !complete,
		unfinished: unfinished, unfinishedSent: unfinishedSent}
	if failed {
		// Kafka may be gone: do not wait for it (the instances' counts
		// stand; the reason says what was not delivered).
		g.stopSampler(run, false)
	} else {
		g.stopSampler(run, true) // the last sample sees every record delivered
		acc.delivered, acc.fromBroker = g.delivered(ctx, p, logger)
	}
	if g.sink != nil && p.scheduled() {
		g.recordOffered(ctx, p, logger)
	}
	fin := summarize(acc)
	np := *p
	np.Finished = true
	if !g.conclude(ctx, e, np, fin, logger) {
		return
	}
	logger.Info("load finished", zap.Int64("records_sent", fin.RecordsSent), zap.Int64("records_delivered", fin.RecordsDelivered),
		zap.Int64("errors", fin.Errors), zap.Int64("records_missed", fin.RecordsMissed), zap.Int64("records_backfilled", fin.RecordsBackfilled),
		zap.Int("takeovers", fin.Takeovers), zap.Int("restarts", fin.Restarts),
		zap.Bool("failed", fin.Failed), zap.String("reason", fin.Reason), zap.Strings("instances", p.Participants))
}

// leadPreparation fixes the schedule's start once every instance owning a
// range has prepared its share of the plan's epoch (status.Prepared), StartDelay from now so
// that every instance sees it before it comes. Ranges of instances that die
// meanwhile are handed over first. A load not prepared within
// PrepareTimeout of its acceptance fails, naming the instances not ready:
// starting it anyway would produce its first seconds late.
func (g *Generator) leadPreparation(ctx context.Context, e planEntry, alive map[string]bool, stable bool, logger *zap.Logger) {
	p, run := e.p, e.p.Cmd.RunID
	if stable {
		g.takeOver(ctx, e, alive, logger) // a new plan revision: acted on next round
	}
	var waiting []string
	var slowest int64
	for _, o := range p.Ranges {
		if slices.Contains(waiting, o.Instance) {
			continue
		}
		s, found, err := g.statusOf(ctx, run, o.Instance)
		if err != nil {
			logger.Warn("read load checkpoint failed; re-checking next round", zap.String("of", o.Instance), zap.Error(err))
			return
		}
		if !found || !s.Prepared || s.PreparedEpoch < p.Epoch {
			waiting = append(waiting, o.Instance)
		}
		slowest = max(slowest, s.PrepareMs)
	}
	now := g.clock.Now()
	np := *p
	if len(waiting) == 0 {
		np.StartMs = now.Add(g.cfg.StartDelay).UnixMilli()
		b, _ := json.Marshal(np)
		if err := g.updatePlan(ctx, run, b, e.rev); err != nil {
			logger.Info("plan changed meanwhile; re-checking next round", zap.Error(err))
			return
		}
		logger.Info("load prepared; schedule start fixed", zap.Time("start", np.start()), zap.Int64("slowest_prepare_ms", slowest),
			zap.Int64("since_accept_ms", now.UnixMilli()-p.AcceptedMs))
		return
	}
	if now.Sub(time.UnixMilli(p.AcceptedMs)) < g.cfg.PrepareTimeout {
		return
	}
	slices.Sort(waiting)
	fin := events.LoadFinished{ExperimentID: p.Cmd.ExperimentID, RunID: run, Instance: strings.Join(p.Participants, ","),
		StartMs: now.UnixMilli(), EndMs: now.UnixMilli(), Failed: true,
		Reason: fmt.Sprintf("load not prepared within %s (key table, producer, topic metadata) by %s; not started", g.cfg.PrepareTimeout,
			strings.Join(waiting, ", "))}
	np.Stopped, np.Finished = true, true
	if g.conclude(ctx, e, np, fin, logger) {
		logger.Warn("load not prepared in time; failed", zap.String("reason", fin.Reason))
	}
}

// conclude publishes a load's single load.finished, then writes its
// finished plan np (revision-checked) and drops its checkpoints; false when
// either write failed (the next round tries again: the message id
// de-duplicates a second load.finished).
func (g *Generator) conclude(ctx context.Context, e planEntry, np plan, fin events.LoadFinished, logger *zap.Logger) bool {
	run := np.Cmd.RunID
	if err := g.bus.Publish(ctx, fin, finishedID(run)); err != nil {
		logger.Warn("publish load finished failed; retrying", zap.Error(err))
		return false
	}
	b, _ := json.Marshal(np)
	if err := g.updatePlan(ctx, run, b, e.rev); err != nil {
		logger.Info("plan changed meanwhile; re-checking next round", zap.Error(err))
		return false
	}
	g.mu.Lock()
	delete(g.plans, run)
	g.mu.Unlock()
	for _, i := range np.Participants {
		_ = g.runs.Purge(ctx, statusKey(run, i))
	}
	return true
}

// recordOffered stores the records the schedule holds in each whole second
// (kafkasignals.MetricLoadOffered), against which the analyzer checks the
// instances' acknowledged records per second.
func (g *Generator) recordOffered(ctx context.Context, p *plan, logger *zap.Logger) {
	n, period := p.Cmd.Workload.Sensors, time.Duration(p.PeriodNs)
	secs := int(p.duration() / time.Second)
	offered := make([]float64, secs)
	for k := range secs {
		offered[k] = float64(dueAll(n, period, time.Duration(k+1)*time.Second) - dueAll(n, period, time.Duration(k)*time.Second))
	}
	t := kafkasignals.Target{ExperimentID: p.Cmd.ExperimentID, RunID: p.Cmd.RunID}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.sink.InsertRunMetrics(sctx, kafkasignals.PerSecondPoints(t, kafkasignals.MetricLoadOffered, nil, p.StartMs, offered)); err != nil {
		logger.Warn("store the load's offered records per second failed", zap.Error(err))
	}
}

// updatePlan writes a plan with a revision check.
func (g *Generator) updatePlan(ctx context.Context, run string, b []byte, rev uint64) error {
	_, err := g.runs.Update(ctx, planKey(run), b, rev)
	return err
}

// writeBack writes a plan that was lost with its bucket again, from this
// leader's copy, so the load ends with its summary, every instance can
// still stop it, and a restarted instance finds its share. Another
// instance that thought it led may have been first: its copy is as good.
func (g *Generator) writeBack(ctx context.Context, e planEntry, logger *zap.Logger) {
	b, err := json.Marshal(e.p)
	if err != nil {
		logger.Error("encode a lost load plan failed", zap.Error(err))
		return
	}
	switch _, err := g.runs.Create(ctx, planKey(e.p.Cmd.RunID), b); {
	case err == nil:
		logger.Warn("load plan lost with its kv bucket written back from the leader's copy", zap.Int("epoch", e.p.Epoch))
	case errors.Is(err, jetstream.ErrKeyExists):
	default:
		logger.Warn("write back a lost load plan failed; retrying next round", zap.Error(err))
	}
}

// delivered is what the load added to its input topic, read from the
// broker: the high-water marks summed over partitions, less the baseline
// taken when the load was accepted. false when they cannot be read.
func (g *Generator) delivered(ctx context.Context, p *plan, logger *zap.Logger) (int64, bool) {
	if !p.BaselineKnown {
		return 0, false
	}
	cl, err := g.kafkaClient(p.Cmd.Kafka.Brokers)
	if err != nil {
		logger.Warn("kafka client for the delivered count failed", zap.Error(err))
		return 0, false
	}
	defer cl.Close()
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := kafkasignals.HighWatermark(kctx, kadm.NewClient(cl), p.Cmd.Kafka.InputTopic)
	if errors.Is(err, kafkasignals.ErrUnknownTopic) {
		n, err = 0, nil
	}
	if err != nil {
		logger.Warn("read the delivered count from the broker failed; reporting acknowledged records", zap.Error(err))
		return 0, false
	}
	return max(0, n-p.BaselineHWM), true
}

// statusOf reads an instance's checkpoint of a run.
func (g *Generator) statusOf(ctx context.Context, run, instance string) (status, bool, error) {
	ent, err := g.runs.Get(ctx, statusKey(run, instance))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return status{}, false, nil
	}
	if err != nil {
		return status{}, false, err
	}
	var s status
	if err := json.Unmarshal(ent.Value(), &s); err != nil {
		return status{}, false, nil // unreadable: as if it never reported
	}
	return s, true, nil
}

// takeOver hands the ranges of the plan's dead instances to the live
// participants (or, when none is left, to any live instance), each piece
// from the dead instance's last acked watermark for it, so the heirs
// back-fill what it left.
func (g *Generator) takeOver(ctx context.Context, e planEntry, alive map[string]bool, logger *zap.Logger) {
	p, run := e.p, e.p.Cmd.RunID
	var heirs, dead []string
	for _, i := range p.Participants {
		if alive[i] {
			heirs = append(heirs, i)
		}
	}
	if len(heirs) == 0 {
		heirs = sortedKeys(alive)
	}
	if len(heirs) == 0 {
		return
	}
	for _, o := range p.Ranges {
		if !alive[o.Instance] && !slices.Contains(dead, o.Instance) {
			dead = append(dead, o.Instance)
		}
	}
	if len(dead) == 0 {
		return
	}
	ckpts := map[string]status{}
	for _, d := range dead {
		s, _, err := g.statusOf(ctx, run, d)
		if err != nil {
			logger.Warn("read checkpoint of a dead instance failed; re-checking next round", zap.String("of", d), zap.Error(err))
			return
		}
		ckpts[d] = s
	}
	nr := reassign(p.Ranges, func(i string) bool { return alive[i] }, heirs, func(o owned) []piece {
		return resumeFrom([]piece{{Range: o.Range, From: time.Duration(o.FromNs)}}, ckpts[o.Instance].Lanes)
	})
	if nr == nil {
		return
	}
	if err := checkCover(nr, p.Cmd.Workload.Sensors); err != nil {
		logger.Error("range reassignment is inconsistent; keeping the plan", zap.Error(err))
		return
	}
	np := *p
	np.Ranges, np.Epoch, np.Takeovers = nr, p.Epoch+1, p.Takeovers+len(dead)
	np.Participants = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(p.Participants), heirs...))))
	b, _ := json.Marshal(np)
	if err := g.updatePlan(ctx, run, b, e.rev); err != nil {
		logger.Info("plan changed meanwhile; re-checking next round", zap.Error(err))
		return
	}
	g.m.takeovers.Inc()
	from := map[string]time.Duration{}
	for _, d := range dead {
		for _, l := range ckpts[d].Lanes {
			from[d] = max(from[d], time.Duration(l.AckedNs))
		}
	}
	logger.Warn("key ranges taken over", zap.Strings("dead", dead), zap.Strings("heirs", heirs), zap.Int("epoch", np.Epoch),
		zap.Any("acked_watermarks", from))
}
