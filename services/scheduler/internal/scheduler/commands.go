package scheduler

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// publishCommand publishes the command a run's state waits on (none for
// the timed phases but warmup, which starts the load); attempt 0 is the
// first, and each re-send attempt gets a message id of its own.
func (s *Scheduler) publishCommand(ctx context.Context, r *RunRecord, attempt int) error {
	id := func(base string) string {
		if attempt == 0 {
			return base
		}
		return fmt.Sprintf("%s:%d", base, attempt)
	}
	kafka := s.kafkaOf(r)
	switch r.State {
	case events.RunStateProvisioning:
		return s.bus.Publish(ctx, events.RunProvision{ExperimentID: r.ExperimentID, RunID: r.RunID, SUT: r.Config.SUT.Event(), Kafka: kafka},
			id("provision:"+r.RunID))
	case events.RunStateWarmup:
		w := r.Config.Workload
		dur := r.Config.Phases.Warmup.Duration + r.Config.Phases.Measure.Duration
		return s.bus.Publish(ctx, events.LoadStart{ExperimentID: r.ExperimentID, RunID: r.RunID, Kafka: kafka, DurationMs: dur.Milliseconds(),
			Workload: events.Workload{Sensors: w.Sensors, PeriodMs: w.PeriodMs, RatePerSec: w.Rate(), ValueW: w.Value, Format: w.Format, SchemaID: w.SchemaID}},
			id("load.start:"+r.RunID))
	case events.RunStateTeardown:
		if err := s.bus.Publish(ctx, events.CollectRelease{ExperimentID: r.ExperimentID, RunID: r.RunID}, id("collect.release:"+r.RunID)); err != nil {
			return err
		}
		return s.bus.Publish(ctx, s.teardownCmd(r), id("teardown:"+r.RunID))
	case events.RunStateAnalyzing:
		mp, _ := r.Phase(events.RunStateMeasuring)
		bp, _ := r.Phase(events.RunStateBaseline)
		return s.bus.Publish(ctx, events.RunMeasured{ExperimentID: r.ExperimentID, RunID: r.RunID, ConfigHash: r.ConfigHash, Factors: r.Factors,
			Repetition: r.Repetition, Phases: r.Phases, MeasureStartMs: mp.StartMs, MeasureEndMs: mp.EndMs, BaselineStart: bp.StartMs,
			BaselineEnd: bp.EndMs, Targets: r.Targets, RecordsSent: r.RecordsSent, OfferedRate: r.Config.Workload.Rate(),
			RecordsDelivered: r.RecordsDelivered, DeliveredFromBroker: r.DeliveredFromBroker, RecordsMissed: r.RecordsMissed,
			RecordsBackfilled: r.RecordsBackfilled, LoadTakeovers: r.LoadTakeovers, LoadRestarts: r.LoadRestarts, LoadNote: r.LoadNote},
			id("measured:"+r.RunID))
	}
	return nil
}

// resend re-publishes the command a run still waits on every Resend (runMu
// held). Each attempt has a message id of its own, so the stream takes it
// even when the first one was stored and then lost to its consumer
// (dead-lettered during an outage); within one attempt the id is fixed, so
// two schedulers, or one after a restart, send it once. Every command's
// handler is idempotent.
func (s *Scheduler) resend(ctx context.Context, r *RunRecord, now int64) {
	if s.cfg.Resend <= 0 {
		return
	}
	n := int((now - r.EnteredMs) / s.cfg.Resend.Milliseconds())
	if n < 1 || n <= s.resent[r.RunID] {
		return
	}
	s.resent[r.RunID] = n
	if err := s.publishCommand(ctx, r, n); err != nil {
		s.logger.Warn("re-send failed", zap.String("run_id", r.RunID), zap.String("state", r.State), zap.Int("attempt", n), zap.Error(err))
	}
}

// stopRun stops the load and tears down a started run (best effort; the
// provisioner and load generator are idempotent).
func (s *Scheduler) stopRun(ctx context.Context, r *RunRecord) {
	_ = s.bus.Publish(ctx, events.LoadStop{ExperimentID: r.ExperimentID, RunID: r.RunID}, "load.stop:"+r.RunID)
	_ = s.bus.Publish(ctx, events.CollectRelease{ExperimentID: r.ExperimentID, RunID: r.RunID}, "collect.release:"+r.RunID)
	_ = s.bus.Publish(ctx, s.teardownCmd(r), "teardown:"+r.RunID)
}

// topic gives each run its own topics so runs never read each other's data.
func topic(r *RunRecord, base string) string { return base + "-" + r.RunID }

// kafkaOf names the run's data plane.
func (s *Scheduler) kafkaOf(r *RunRecord) events.Kafka {
	return events.Kafka{Brokers: s.cfg.Brokers, InputTopic: topic(r, r.Config.Kafka.InputTopic), OutputTopic: topic(r, r.Config.Kafka.OutputTopic),
		Partitions: r.Config.Kafka.Partitions}
}

// teardownCmd asks to remove the run's deployment and topics.
func (s *Scheduler) teardownCmd(r *RunRecord) events.RunTeardown {
	k := s.kafkaOf(r)
	return events.RunTeardown{ExperimentID: r.ExperimentID, RunID: r.RunID, Backend: r.Config.SUT.Backend, Kafka: &k}
}
