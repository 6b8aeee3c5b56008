package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// handler routes the load commands: load.start and load.stop.
func (g *Generator) handler() bus.Handler {
	return bus.Router("load generator", bus.On(g.accept), bus.On(g.stop))
}

// onDeadLetter answers a load.start the consumer dead-lettered (it failed
// its schema, could not be decoded, or ran out of deliveries) with a failed
// load.finished for its run, so the scheduler does not wait out its grace
// period for an answer that cannot come. Its message id is the run's
// load.finished id: when accept already answered, this one is dropped.
func (g *Generator) onDeadLetter(ctx context.Context, h nats.Header, reason string) {
	if events.Type(h.Get(bus.HeaderType)) != events.TypeLoadStart {
		return
	}
	run, exp := h.Get(bus.HeaderRun), h.Get(bus.HeaderExperiment)
	logger := g.logger.With(zap.String("run_id", run), zap.String("experiment_id", exp))
	if run == "" || exp == "" {
		logger.Error("dead-lettered load.start names no run; nobody can be told", zap.String("reason", reason))
		return
	}
	now := g.clock.Now().UnixMilli()
	fin := events.LoadFinished{ExperimentID: exp, RunID: run, Instance: g.cfg.Instance, StartMs: now, EndMs: now, Failed: true,
		Reason: "load.start could not be processed: " + reason}
	if err := g.bus.Publish(ctx, fin, finishedID(run)); err != nil {
		logger.Error("answer a dead-lettered load.start failed", zap.Error(err))
		return
	}
	logger.Warn("dead-lettered load.start answered with a failed load.finished", zap.String("reason", reason))
}

// finishedID de-duplicates a run's load.finished across instances.
func finishedID(run string) string { return "load.finished:" + run }

func (g *Generator) publishFailed(ctx context.Context, m *events.LoadStart, reason string) error {
	now := g.clock.Now().UnixMilli()
	fin := events.LoadFinished{ExperimentID: m.ExperimentID, RunID: m.RunID, Instance: g.cfg.Instance, StartMs: now, EndMs: now, Failed: true, Reason: reason}
	g.logger.Warn("load rejected", zap.String("run_id", m.RunID), zap.String("reason", reason))
	return g.bus.Publish(ctx, fin, finishedID(m.RunID))
}

// accept checks a load command, registers the schema, and writes the run's
// plan, splitting the key space over the live instances.
func (g *Generator) accept(ctx context.Context, m *events.LoadStart) error {
	if err := Validate(m); err != nil {
		if perr := g.publishFailed(ctx, m, err.Error()); perr != nil {
			return perr
		}
		return bus.Permanent(err)
	}
	if _, err := g.runs.Get(ctx, planKey(m.RunID)); err == nil {
		return nil // redelivery: already accepted
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read plan of run %s: %w", m.RunID, err)
	} else if g.planLost(m.RunID) {
		return errPlanLost(m.RunID) // accepted before; a new plan would load it twice
	}
	// Before anything with effects outside (the schema's registration): a
	// retry would repeat it.
	if !g.view.isSynced() {
		return errors.New("membership view not synced yet")
	}
	acceptedAt := g.clock.Now()
	baseline, baselineKnown, err := g.probeTopic(ctx, m.Kafka.Brokers, m.Kafka.InputTopic)
	if err != nil {
		return g.publishFailed(ctx, m, err.Error())
	}
	schemaID := m.Workload.SchemaID
	if f, _ := uc3.ParseFormat(m.Workload.Format); f == uc3.FormatAvro && g.cfg.SchemaRegistryURL != "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		id, err := uc3.RegisterSchema(rctx, g.hc, g.cfg.SchemaRegistryURL, g.cfg.SchemaSubject, uc3.ActivePowerRecordSchema)
		cancel()
		if err != nil {
			return g.publishFailed(ctx, m, err.Error())
		}
		schemaID = id
	}
	alive, _ := g.view.view()
	alive[g.cfg.Instance] = true
	names := sortedKeys(alive)
	// No start yet: the leader fixes it once every instance has prepared
	// its share (leadPreparation).
	p := plan{Cmd: *m, AcceptedMs: g.clock.Now().UnixMilli(), PeriodNs: int64(period(m.Workload)), Seed: rand.Uint64(),
		SchemaID: schemaID, Ranges: split(0, m.Workload.Sensors, names), Participants: names, Coordinator: g.cfg.Instance,
		BaselineHWM: baseline, BaselineKnown: baselineKnown}
	if err := checkCover(p.Ranges, m.Workload.Sensors); err != nil {
		return bus.Permanent(fmt.Errorf("plan run %s: %w", m.RunID, err))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan of run %s: %w", m.RunID, err)
	}
	if _, err := g.runs.Create(ctx, planKey(m.RunID), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return fmt.Errorf("write plan of run %s: %w", m.RunID, err)
	}
	if baselineKnown && g.sink != nil && g.cfg.RecordKafkaSignals {
		// The reading just taken starts the run's high-water mark series
		// before the load does.
		pt := kafkasignals.InputPoint(kafkasignals.Target{ExperimentID: m.ExperimentID, RunID: m.RunID, InputTopic: m.Kafka.InputTopic},
			acceptedAt.UnixMilli(), baseline)
		if err := g.sink.InsertRunMetrics(ctx, []store.RunMetric{pt}); err != nil {
			g.logger.Warn("store the input high-water mark at accept failed", zap.String("run_id", m.RunID), zap.Error(err))
		}
	}
	g.logger.Info("load accepted", zap.String("run_id", m.RunID), zap.Float64("rate_per_sec", m.Workload.RatePerSec),
		zap.Int("sensors", m.Workload.Sensors), zap.Strings("instances", names), zap.Uint32("schema_id", schemaID))
	return nil
}

// stop marks the run's plan stopped; every instance then stops its share.
func (g *Generator) stop(ctx context.Context, m *events.LoadStop) error {
	return g.markStopped(ctx, m.RunID)
}

// markStopped sets the plan's Stopped flag (revision-checked).
func (g *Generator) markStopped(ctx context.Context, run string) error {
	for attempt := 0; ; attempt++ {
		e, err := g.runs.Get(ctx, planKey(run))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if g.planLost(run) {
				return errPlanLost(run)
			}
			return nil // never started (rejected) or long gone
		}
		if err != nil {
			return fmt.Errorf("read plan of run %s: %w", run, err)
		}
		var p plan
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return bus.Permanent(fmt.Errorf("decode plan of run %s: %w", run, err))
		}
		if p.Stopped || p.Finished {
			return nil
		}
		p.Stopped = true
		b, _ := json.Marshal(p)
		if _, err := g.runs.Update(ctx, planKey(run), b, e.Revision()); err == nil {
			return nil
		} else if attempt >= 5 {
			return fmt.Errorf("mark run %s stopped: %w", run, err)
		}
	}
}

// Validate checks a load command before any load starts.
func Validate(m *events.LoadStart) error {
	var errs []error
	w := m.Workload
	if w.Sensors <= 0 {
		errs = append(errs, fmt.Errorf("workload.sensors: got %d, expected a positive number", w.Sensors))
	} else if why := spec.SensorsProblem(w.Sensors); why != "" {
		errs = append(errs, fmt.Errorf("workload.sensors: %s", why))
	}
	switch {
	case math.IsNaN(w.RatePerSec) || math.IsInf(w.RatePerSec, 0) || w.RatePerSec <= 0:
		errs = append(errs, fmt.Errorf("workload.rate_per_sec: got %g, expected a positive rate", w.RatePerSec))
	case w.Sensors > 0 && float64(w.Sensors)/w.RatePerSec < 1e-6:
		errs = append(errs, fmt.Errorf("workload.rate_per_sec: got %g for %d sensors, expected at most 1,000,000 per sensor", w.RatePerSec, w.Sensors))
	}
	if _, err := uc3.ParseFormat(w.Format); err != nil {
		errs = append(errs, fmt.Errorf("workload.format: %w", err))
	}
	if m.DurationMs <= 0 {
		errs = append(errs, fmt.Errorf("duration_ms: got %d, expected a positive duration", m.DurationMs))
	}
	if len(m.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if m.Kafka.InputTopic == "" {
		errs = append(errs, errors.New("kafka.input_topic: required"))
	}
	return errors.Join(errs...)
}

// probeTopic fails when no seed broker answers within 10 s; otherwise it
// returns the input topic's high-water marks summed (0 for a topic not
// created yet), the baseline for what the load adds to it. known is false
// when they could not be read.
func (g *Generator) probeTopic(ctx context.Context, brokers []string, topic string) (baseline int64, known bool, err error) {
	cl, err := g.kafkaClient(brokers)
	if err != nil {
		return 0, false, fmt.Errorf("kafka client for %v: %w", brokers, err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		return 0, false, fmt.Errorf("kafka brokers %v unreachable: %w", brokers, err)
	}
	n, err := kafkasignals.HighWatermark(pctx, kadm.NewClient(cl), topic)
	switch {
	case errors.Is(err, kafkasignals.ErrUnknownTopic):
		return 0, true, nil
	case err != nil:
		return 0, false, nil
	}
	return n, true, nil
}

// planLost reports whether run's plan vanished with its bucket and is
// still to be written back (by the leader, from its copy).
func (g *Generator) planLost(run string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.plans[run].lost
}

// errPlanLost retries a command for a run whose plan is being written back
// (the consumer's back-off gives the leader a poll or two).
func errPlanLost(run string) error {
	return fmt.Errorf("plan of run %s was lost with its kv bucket and is being written back; retrying", run)
}
