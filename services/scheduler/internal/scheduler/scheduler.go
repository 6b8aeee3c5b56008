// Package scheduler owns experiments and runs: it validates and expands
// submitted specs, drives each run through its state machine by publishing
// commands and reacting to events, and keeps all state in JetStream KV with
// revision-checked writes so a restarted scheduler resumes where it stopped.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/store"
)

// Bucket is the KV bucket holding experiment and run state.
const Bucket = "greenflow_scheduler"

// Clock is the time source; tests inject their own.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Store is what the scheduler writes to ClickHouse.
type Store interface {
	UpsertExperiment(ctx context.Context, e store.Experiment) error
	UpsertRuns(ctx context.Context, runs []store.Run) error
	ResultsReader
	SetExperimentState(ctx context.Context, experimentID, state string) error
}

var _ Store = (*store.Store)(nil)

// Config configures the scheduler.
type Config struct {
	// Brokers are the Kafka bootstrap addresses runs use.
	Brokers []string `yaml:"brokers"`
	// Concurrency is how many runs may be active at once on one target
	// cluster (backend), across every scheduler sharing the state bucket
	// (runs sharing nodes must not overlap, so the default is 1). Each
	// scheduler enforces its own value: run them with the same.
	Concurrency int `yaml:"concurrency"`
	// Tick is how often timed phases are checked.
	Tick time.Duration `yaml:"tick"`
	// Timeouts bound the phases that wait for another service.
	ProvisionTimeout time.Duration `yaml:"provisionTimeout"`
	LoadGrace        time.Duration `yaml:"loadGrace"` // after measure+cooldown, waiting for load.finished
	TeardownTimeout  time.Duration `yaml:"teardownTimeout"`
	AnalyzeTimeout   time.Duration `yaml:"analyzeTimeout"`
	// Retries is how many times a run that failed for a transient reason
	// (a timeout, a load generator failure, a crash of the system under
	// test) is run again, as a new run "<run>-aN" with the same config.
	Retries int `yaml:"retries"`
	// Resend re-publishes the current state's command (same message id, so
	// the stream drops it unless the first was lost) when no answer came.
	Resend time.Duration `yaml:"resend"`
	// Version and Commit are stored with each experiment.
	Version string `yaml:"-"`
	Commit  string `yaml:"-"`
}

// Default returns the default configuration.
func Default() Config {
	return Config{Concurrency: 1, Tick: 100 * time.Millisecond, ProvisionTimeout: 2 * time.Minute, LoadGrace: 30 * time.Second,
		TeardownTimeout: time.Minute, AnalyzeTimeout: 2 * time.Minute, Resend: 10 * time.Second, Retries: 1}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("scheduler.brokers: at least one Kafka broker address is required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("scheduler.concurrency: got %d, expected 1 or more", c.Concurrency))
	}
	if c.Tick <= 0 {
		errs = append(errs, fmt.Errorf("scheduler.tick: got %s, expected a positive duration", c.Tick))
	}
	return errors.Join(errs...)
}

// Scheduler is the scheduler service.
type Scheduler struct {
	cfg    Config
	bus    *bus.Bus
	store  Store
	logger *zap.Logger
	clock  Clock

	kv      kvStore
	view    *view
	trig    triggers
	rows    *rowWriter
	results ResultsReader
	runMu   sync.Mutex // see updateRun
	running atomic.Bool
	// fatal carries the error of a part started after Run (the trigger
	// consumer) that stopped: Run returns it.
	fatal chan error
	// wrapKV, when set (by tests), wraps the state bucket, e.g. to inject
	// faults.
	wrapKV func(jetstream.KeyValue) jetstream.KeyValue
	// resent is the last re-send attempt of each waiting run's command
	// (guarded by runMu); a restart forgets it, and re-sends the current
	// attempt under the same id, which the stream drops.
	resent map[string]int

	transitions *prometheus.CounterVec
	runsActive  prometheus.Gauge
}

// New builds a scheduler; it does no I/O.
func New(cfg Config, b *bus.Bus, st Store, logger *zap.Logger, reg prometheus.Registerer, clock Clock) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = realClock{}
	}
	s := &Scheduler{cfg: cfg, bus: b, store: st, logger: logger.With(zap.String("component", "scheduler")), clock: clock,
		view: newView(), resent: map[string]int{}, fatal: make(chan error, 1),
		rows: newRowWriter(st, logger), results: st,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_scheduler_run_transitions_total",
			Help: "Run state transitions, by target state."}, []string{"state"}),
		runsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_scheduler_runs_active",
			Help: "Runs between provisioning and analysis."}),
	}
	if reg != nil {
		if err := reg.Register(s.transitions); err != nil {
			return nil, fmt.Errorf("register scheduler metrics: %w", err)
		}
		if err := reg.Register(s.runsActive); err != nil {
			return nil, fmt.Errorf("register scheduler metrics: %w", err)
		}
	}
	return s, nil
}

var _ service.Checker = (*Scheduler)(nil)

// ErrNotReady is returned (and served as 503) while the scheduler's view of
// its KV state is not loaded: an unknown experiment then may well exist.
var ErrNotReady = errors.New("scheduler not ready: its state in KV is not loaded yet")

// Check reports whether the scheduler can answer and drive runs: only once
// its view of the state bucket has synced, and while Run runs.
func (s *Scheduler) Check() error {
	select {
	case <-s.view.synced:
	default:
		return ErrNotReady
	}
	if !s.running.Load() {
		return errors.New("scheduler not running")
	}
	return nil
}

// Run consumes events and drives runs until ctx ends. When a part fails —
// a consumer that cannot start, the state watch, the trigger consumer — it
// stops the others and returns the cause at once.
func (s *Scheduler) Run(parent context.Context) error {
	s.running.Store(true)
	defer s.running.Store(false)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	kv, err := s.bus.KV(ctx, Bucket)
	if err != nil {
		return err
	}
	if s.wrapKV != nil {
		kv = s.wrapKV(kv)
	}
	s.kv = kvStore{kv}
	errc := make(chan error, 3)
	go func() { errc <- s.view.watch(ctx, kv) }()
	select {
	case <-s.view.synced:
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
	if n := len(s.view.active()); n > 0 {
		s.logger.Info("resuming unfinished experiments", zap.Int("experiments", n))
	}
	if len(s.view.triggerSubjects()) > 0 {
		if err := s.ensureTriggerStream(ctx); err != nil {
			return err
		}
		s.startTriggerConsumer(ctx)
	}
	rowsDone := make(chan struct{})
	go func() { s.rows.run(ctx); close(rowsDone) }()
	defer func() { cancel(); <-rowsDone }() // the writer flushes once more, then ends
	go func() { errc <- s.bus.Consume(ctx, bus.ConsumerScheduler, s.handle, bus.OnDeadLetter(s.onDeadLetter)) }()
	go func() { errc <- s.serveNATS(ctx) }()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	running := 3 // watch, consumer, API
	for {
		select {
		case <-ctx.Done():
			for ; running > 0; running-- {
				<-errc
			}
			return nil
		case err := <-s.fatal:
			return err
		case err := <-errc:
			running--
			if err != nil {
				return err
			}
			if ctx.Err() == nil {
				return errors.New("scheduler: a component stopped unexpectedly")
			}
		case <-t.C:
			if err := s.tick(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("scheduler tick failed", zap.Error(err))
			}
		}
	}
}

func (s *Scheduler) nowMs() int64 { return s.clock.Now().UnixMilli() }

func (s *Scheduler) handle(ctx context.Context, d bus.Delivery) error {
	switch m := d.Msg.(type) {
	case *events.ExperimentSubmit:
		return s.submit(ctx, m)
	case *events.ExperimentCancel:
		return s.cancel(ctx, m)
	case *events.RunProvisioned:
		return s.onProvisioned(ctx, m)
	case *events.RunProvisionFailed:
		return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) {
			if r.State != StateProvisioning {
				return false, nil
			}
			r.Reason = "provisioning failed: " + m.Reason
			r.Transient = m.Transient // e.g. a broker or API server that was down: retried as a new run
			return true, s.fail(ctx, r)
		})
	case *events.LoadFinished:
		return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) {
			if r.LoadDone || Terminal(r.State) {
				return false, nil
			}
			r.LoadDone, r.RecordsSent = true, m.RecordsSent
			r.RecordsDelivered, r.DeliveredFromBroker = m.RecordsDelivered, m.DeliveredFromBroker
			r.RecordsMissed, r.RecordsBackfilled = m.RecordsMissed, m.RecordsBackfilled
			r.LoadTakeovers, r.LoadRestarts = m.Takeovers, m.Restarts
			if m.Failed {
				r.LoadFailed = m.Reason
			} else {
				r.LoadNote = m.Reason
			}
			return true, nil
		})
	case *events.RunTornDown:
		return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) { return s.onTornDown(ctx, r, m) })
	case *events.RunAnalyzed:
		return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) {
			if r.State != StateAnalyzing {
				return false, nil
			}
			r.Flags = m.Flags
			if m.Invalid {
				// The measurement broke the platform's invariant (the load
				// not delivered, samples missing): never a done run; a new
				// attempt may well succeed.
				r.Reason = "invalid measurement: " + m.Reason
				r.Transient = true
				return true, s.fail(ctx, r)
			}
			return true, s.transition(ctx, r, StateDone)
		})
	default:
		return bus.Permanent(fmt.Errorf("scheduler does not handle %T", d.Msg))
	}
}

// onTornDown applies the provisioner's report on a run's teardown:
//
//   - Incomplete: removal is still going on; its cause is kept for the
//     teardown timeout's reason, and the run keeps waiting.
//   - Crashed: the system under test had died on its own: the run fails
//     (transient) unless it is already final.
//   - Lost: the provisioner has no record of the run or cannot find its
//     system under test, so nothing vouches that it ran throughout: the run
//     fails (transient) unless it is already final.
//   - otherwise a clean teardown.
func (s *Scheduler) onTornDown(ctx context.Context, r *RunRecord, m *events.RunTornDown) (bool, error) {
	if r.TornDown {
		return false, nil // an answer to a re-sent command, or a late report
	}
	// A crash or a lost SUT fails the run at once, even while removal is
	// still going on (the provisioner reports a crash as soon as it sees
	// it, with Incomplete set, and again when everything is removed).
	switch {
	case m.Crashed && !Terminal(r.State):
		r.TornDown = !m.Incomplete
		r.Reason = "system under test crashed: " + m.Reason
		r.Transient = true
		return true, s.fail(ctx, r)
	case m.Lost && !Terminal(r.State):
		r.TornDown = !m.Incomplete
		r.Reason = "system under test lost: the provisioner cannot vouch that it ran throughout: " + m.Reason
		r.Transient = true
		return true, s.fail(ctx, r)
	case m.Incomplete:
		if m.Reason == "" || m.Reason == r.TeardownIssue {
			return false, nil
		}
		r.TeardownIssue = m.Reason
		return true, nil
	}
	r.TornDown = true
	return true, nil
}

// onRun applies fn to a run; unknown runs are rejected permanently.
func (s *Scheduler) onRun(ctx context.Context, runID string, fn func(*RunRecord) (bool, error)) error {
	r, changed, err := s.updateRun(ctx, runID, fn)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return bus.Permanent(fmt.Errorf("unknown run %s", runID))
	}
	if err != nil {
		return err
	}
	if changed {
		return s.refreshExperiment(ctx, r.Value.ExperimentID)
	}
	return nil
}

// updateRun is the one way run records change: a revision-checked write
// and, when something changed, its commit (view, row, entry command, state
// event) — under one lock, so that a run's events are published in the
// order its states were written, whichever goroutine wrote them.
func (s *Scheduler) updateRun(ctx context.Context, runID string, fn func(*RunRecord) (bool, error)) (versioned[RunRecord], bool, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	r, changed, err := update(ctx, s.kv, runKey(runID), fn)
	if err == nil && changed {
		s.commit(ctx, r)
	}
	return r, changed, err
}

func (s *Scheduler) submit(ctx context.Context, m *events.ExperimentSubmit) error {
	var existing ExperimentRecord
	if _, err := s.kv.get(ctx, expKey(m.ExperimentID), &existing); err == nil {
		return nil // redelivery: already accepted
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	e, err := spec.Parse([]byte(m.Spec), nil)
	if err != nil {
		return s.failSubmission(ctx, m.ExperimentID, "", m.Spec, "invalid spec: "+err.Error(), true)
	}
	if e.Spec.Trigger != nil {
		// A template: it runs when its trigger fires.
		if err := s.arm(ctx, e); bus.IsPermanent(err) {
			return s.failSubmission(ctx, m.ExperimentID, e.Metadata.Name, m.Spec, "trigger not armed: "+err.Error(), true)
		} else if err != nil {
			return err
		}
		return nil
	}
	now := s.nowMs()
	plan, err := e.Expand(m.ExperimentID, now)
	if err != nil {
		return s.failSubmission(ctx, m.ExperimentID, e.Metadata.Name, m.Spec, "expand the spec: "+err.Error(), true)
	}
	rec := ExperimentRecord{ID: m.ExperimentID, Name: e.Metadata.Name, State: "queued", Seed: plan.Seed, CreatedMs: now}
	if q := e.Spec.Search; q != nil {
		probe := Probe{Rate: q.Start}
		for _, r := range plan.Runs {
			probe.Runs = append(probe.Runs, r.ID)
		}
		rec.Search = &SearchState{Search: *q, Repetitions: e.Spec.Repetitions, MinRatio: e.Spec.SLOs.MinThroughputRatio, Probes: []Probe{probe}}
	}
	rows := make([]store.Run, len(plan.Runs))
	for _, r := range plan.Runs {
		rec.RunIDs = append(rec.RunIDs, r.ID)
	}
	// Run keys are created by a bounded pool: one KV round trip each.
	var wg sync.WaitGroup
	errs := make([]error, len(plan.Runs))
	sem := make(chan struct{}, 32)
	for i, r := range plan.Runs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, r spec.Run) {
			defer func() { <-sem; wg.Done() }()
			rr := RunRecord{ExperimentID: m.ExperimentID, RunID: r.ID, Index: r.Index, Repetition: r.Repetition, Factors: r.Factors,
				Config: r.Config, ConfigHash: r.ConfigHash, State: StatePending, EnteredMs: now, CreatedMs: now}
			rev, err := s.kv.create(ctx, runKey(r.ID), rr)
			if errors.Is(err, jetstream.ErrKeyExists) {
				// A crash between here and the experiment key: keep the stored run.
				rev, err = s.kv.get(ctx, runKey(r.ID), &rr)
			}
			if err != nil {
				errs[i] = fmt.Errorf("store run %s: %w", r.ID, err)
				return
			}
			s.view.putRun(versioned[RunRecord]{rr, rev})
			rows[i] = runRow(versioned[RunRecord]{rr, rev})
		}(i, r)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := s.store.UpsertRuns(ctx, rows); err != nil {
		return err // retried: nothing is queued until the runs are stored
	}
	labels, _ := json.Marshal(e.Metadata.Labels)
	resolved, _ := json.Marshal(e)
	if err := s.store.UpsertExperiment(ctx, store.Experiment{ExperimentID: m.ExperimentID, Name: e.Metadata.Name, Spec: string(resolved),
		SpecHash: spec.Hash(e), RunsTotal: uint32(len(plan.Runs)), State: "queued", Labels: string(labels),
		GreenflowVersion: s.cfg.Version, GitCommit: s.cfg.Commit, Environment: environmentJSON(), Seed: plan.Seed, CreatedMs: now}); err != nil {
		return err // retried: nothing is queued until the record is stored
	}
	// The experiment key is written last: its presence means "accepted".
	rev, err := s.kv.create(ctx, expKey(m.ExperimentID), rec)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("store experiment %s: %w", m.ExperimentID, err)
	}
	if err == nil {
		s.view.putExperiment(versioned[ExperimentRecord]{rec, rev})
	}
	s.logger.Info("experiment accepted", zap.String("experiment_id", m.ExperimentID), zap.String("name", rec.Name), zap.Int("runs", len(plan.Runs)))
	s.publishExperiment(ctx, rec, 0, 0, "")
	return nil
}

// failSubmission stores a submission that cannot become an experiment
// (invalid spec, expansion error, dead-lettered) as a failed experiment with
// its reason, so that an id the API handed out always appears in list and
// status, and announces it. An accepted (or already recorded) experiment is
// left alone. With needRow, a failure to store the ClickHouse row is
// returned (the message is retried); without, the KV record is enough.
func (s *Scheduler) failSubmission(ctx context.Context, id, name, specText, reason string, needRow bool) error {
	var existing ExperimentRecord
	if _, err := s.kv.get(ctx, expKey(id), &existing); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read experiment %s: %w", id, err)
	}
	now := s.nowMs()
	if err := s.store.UpsertExperiment(ctx, store.Experiment{ExperimentID: id, Name: name, Spec: specText, State: "failed", Labels: "{}",
		GreenflowVersion: s.cfg.Version, GitCommit: s.cfg.Commit, Environment: environmentJSON(), CreatedMs: now}); err != nil {
		if needRow {
			return err
		}
		s.logger.Warn("store failed experiment row failed", zap.String("experiment_id", id), zap.Error(err))
	}
	rec := ExperimentRecord{ID: id, Name: name, State: "failed", Reason: reason, RunIDs: []string{}, CreatedMs: now}
	rev, err := s.kv.create(ctx, expKey(id), rec)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store failed experiment %s: %w", id, err)
	}
	s.view.putExperiment(versioned[ExperimentRecord]{rec, rev})
	s.logger.Warn("experiment failed at submission", zap.String("experiment_id", id), zap.String("reason", reason))
	s.publishExperiment(ctx, rec, 0, 0, reason)
	return nil
}

// onDeadLetter records a submission the consumer gave up on (undecodable,
// out of deliveries, a handler panic) as a failed experiment with the
// dead-letter reason.
func (s *Scheduler) onDeadLetter(ctx context.Context, h nats.Header, reason string) {
	id := h.Get(bus.HeaderExperiment)
	if events.Type(h.Get(bus.HeaderType)) != events.TypeExperimentSubmit || id == "" {
		return
	}
	if err := s.failSubmission(ctx, id, "", "", "submission dead-lettered: "+reason, false); err != nil {
		s.logger.Error("record dead-lettered submission failed", zap.String("experiment_id", id), zap.Error(err))
	}
}

func (s *Scheduler) cancel(ctx context.Context, m *events.ExperimentCancel) error {
	// The experiment is marked first, so the tick starts none of its pending
	// runs while they are being cancelled.
	ve, changed, err := update(ctx, s.kv, expKey(m.ExperimentID), func(x *ExperimentRecord) (bool, error) {
		if x.State == "cancelled" || x.State == "done" || x.State == "failed" {
			return false, nil
		}
		x.State, x.Reason = "cancelled", m.Reason
		return true, nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return bus.Permanent(fmt.Errorf("unknown experiment %s", m.ExperimentID))
	}
	if err != nil {
		return err
	}
	s.view.putExperiment(ve)
	for _, id := range ve.Value.RunIDs {
		_, _, err := s.updateRun(ctx, id, func(r *RunRecord) (bool, error) {
			if Terminal(r.State) {
				return false, nil
			}
			r.Reason = "cancelled: " + m.Reason
			if r.State != StatePending {
				s.stopRun(ctx, r)
			}
			return true, s.transition(ctx, r, StateCancelled)
		})
		if err != nil {
			return err
		}
	}
	if changed {
		s.storeFinalRows(ctx, ve.Value)
		if err := s.store.SetExperimentState(ctx, m.ExperimentID, "cancelled"); err != nil {
			s.logger.Warn("store experiment state failed", zap.String("experiment_id", m.ExperimentID), zap.Error(err))
		}
		done, failed, _ := s.view.counts(ve.Value, s.cfg.Retries)
		s.publishExperiment(ctx, ve.Value, done, failed, m.Reason)
	}
	return nil
}

// stopRun stops the load and tears down a started run (best effort; the
// provisioner and load generator are idempotent).
func (s *Scheduler) stopRun(ctx context.Context, r *RunRecord) {
	_ = s.bus.Publish(ctx, events.LoadStop{ExperimentID: r.ExperimentID, RunID: r.RunID}, "load.stop:"+r.RunID)
	_ = s.bus.Publish(ctx, events.CollectRelease{ExperimentID: r.ExperimentID, RunID: r.RunID}, "collect.release:"+r.RunID)
	_ = s.bus.Publish(ctx, s.teardownCmd(r), "teardown:"+r.RunID)
}

func (s *Scheduler) fail(ctx context.Context, r *RunRecord) error {
	if r.State != StatePending && !r.TornDown {
		s.stopRun(ctx, r)
	}
	return s.transition(ctx, r, StateFailed)
}

func (s *Scheduler) onProvisioned(ctx context.Context, m *events.RunProvisioned) error {
	return s.onRun(ctx, m.RunID, func(r *RunRecord) (bool, error) {
		if r.State != StateProvisioning {
			return false, nil
		}
		r.Targets = m.Targets
		if err := s.bus.Publish(ctx, events.CollectAssign{ExperimentID: r.ExperimentID, RunID: r.RunID, Targets: m.Targets}, "collect.assign:"+r.RunID); err != nil {
			return false, err
		}
		return true, s.transition(ctx, r, StateBaseline)
	})
}

// transition enters state and sets its deadline. Its entry command and the
// state event are published by commit once the record is written, so no
// answer can arrive before the state it answers is stored.
func (s *Scheduler) transition(_ context.Context, r *RunRecord, state string) error {
	now := s.nowMs()
	r.enter(state, now)
	ph := r.Config.Phases
	switch state {
	case StateBaseline:
		r.PhaseEndMs = now + ph.Baseline.Milliseconds()
	case StateWarmup:
		r.PhaseEndMs = now + ph.Warmup.Milliseconds()
	case StateMeasuring:
		r.PhaseEndMs = now + ph.Measure.Milliseconds()
	case StateCooldown:
		r.PhaseEndMs = now + ph.Cooldown.Milliseconds()
	}
	return nil
}

// commit runs after a run record was written: it updates the local view,
// stores the row in ClickHouse and, when the update entered a state,
// publishes the state's command and the state event (message ids derived
// from run and state, so doing this twice is harmless).
func (s *Scheduler) commit(ctx context.Context, vr versioned[RunRecord]) {
	s.view.putRun(vr)
	s.persistRun(ctx, vr)
	r := &vr.Value
	if !r.entered {
		return
	}
	delete(s.resent, r.RunID) // a new state: its command's attempts count from 0
	if set, ok := s.view.slots(clusterOf(*r)); ok && Terminal(r.State) && slices.Contains(set.Runs, r.RunID) {
		if err := s.releaseSlot(ctx, *r); err != nil {
			// Reclaimed when the slot is next needed.
			s.logger.Warn("release run slot failed", zap.String("run_id", r.RunID), zap.Error(err))
		}
	}
	if err := s.publishEntry(ctx, r); err != nil {
		// The resend in advance() publishes it again.
		s.logger.Warn("publish entry command failed", zap.String("run_id", r.RunID), zap.String("state", r.State), zap.Error(err))
	}
	s.transitions.WithLabelValues(r.State).Inc()
	s.logger.Info("run state", zap.String("experiment_id", r.ExperimentID), zap.String("run_id", r.RunID), zap.String("state", r.State),
		zap.String("reason", r.Reason))
	if err := s.bus.Publish(ctx, events.RunState{ExperimentID: r.ExperimentID, RunID: r.RunID, Index: r.Index, State: r.State, Reason: r.Reason,
		PhaseEndMs: r.PhaseEndMs, TsMs: r.EnteredMs}, "run.state:"+r.RunID+":"+r.State); err != nil {
		s.logger.Warn("publish run state failed", zap.String("run_id", r.RunID), zap.Error(err))
	}
	if r.State == StateFailed && r.Transient && r.Attempt < s.cfg.Retries {
		if err := s.retry(ctx, *r); err != nil {
			s.logger.Error("schedule retry failed", zap.String("run_id", r.RunID), zap.Error(err))
		}
	}
}

// retry queues a new attempt of a failed run (runMu held): a run of its own (so every
// message id differs from the failed attempt's) with the same config, added
// to the experiment. Creating it twice is harmless.
func (s *Scheduler) retry(ctx context.Context, failed RunRecord) error {
	first := failed.RetryOf
	if first == "" {
		first = failed.RunID
	}
	now := s.nowMs()
	rr := RunRecord{ExperimentID: failed.ExperimentID, RunID: fmt.Sprintf("%s-a%d", first, failed.Attempt+1), Repetition: failed.Repetition,
		Factors: failed.Factors, Config: failed.Config, ConfigHash: failed.ConfigHash, State: StatePending, EnteredMs: now, CreatedMs: now,
		Attempt: failed.Attempt + 1, RetryOf: first}
	var created *versioned[RunRecord]
	ve, _, err := update(ctx, s.kv, expKey(failed.ExperimentID), func(e *ExperimentRecord) (bool, error) {
		if slices.Contains(e.RunIDs, rr.RunID) {
			return false, nil
		}
		rr.Index = len(e.RunIDs)
		rev, err := s.kv.create(ctx, runKey(rr.RunID), rr)
		if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("store retry %s: %w", rr.RunID, err)
		}
		if err == nil {
			created = &versioned[RunRecord]{rr, rev}
		}
		e.RunIDs = append(e.RunIDs, rr.RunID)
		return true, nil
	})
	if err != nil {
		return err
	}
	if created != nil { // stored only once the experiment lists it
		s.view.putRun(*created)
		s.persistRun(ctx, *created)
	}
	s.view.putExperiment(ve)
	vf, _, err := update(ctx, s.kv, runKey(failed.RunID), func(r *RunRecord) (bool, error) {
		if r.RetriedAs != "" {
			return false, nil
		}
		r.RetriedAs = rr.RunID
		r.Reason += " (retried as " + rr.RunID + ")"
		return true, nil
	})
	if err != nil {
		return err
	}
	s.view.putRun(vf)
	s.persistRun(ctx, vf)
	s.logger.Info("run will be retried", zap.String("run_id", failed.RunID), zap.String("retry_run_id", rr.RunID), zap.String("reason", failed.Reason))
	return nil
}

// publishEntry publishes the command a state waits on.
func (s *Scheduler) publishEntry(ctx context.Context, r *RunRecord) error {
	return s.publishCommand(ctx, r, 0)
}

// publishCommand publishes the command a state waits on; attempt 0 is the
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
	case StateProvisioning:
		sut := r.Config.SUT
		return s.bus.Publish(ctx, events.RunProvision{ExperimentID: r.ExperimentID, RunID: r.RunID,
			SUT: events.SUT{Template: sut.Template, Backend: sut.Backend, Params: sut.Params, Command: sut.Command,
				Kubernetes: kubernetesSUT(sut.Kubernetes)}, Kafka: kafka}, id("provision:"+r.RunID))
	case StateWarmup:
		w := r.Config.Workload
		dur := r.Config.Phases.Warmup.Duration + r.Config.Phases.Measure.Duration
		return s.bus.Publish(ctx, events.LoadStart{ExperimentID: r.ExperimentID, RunID: r.RunID, Kafka: kafka, DurationMs: dur.Milliseconds(),
			Workload: events.Workload{Sensors: w.Sensors, PeriodMs: w.PeriodMs, RatePerSec: w.Rate(), ValueW: w.Value, Format: w.Format, SchemaID: w.SchemaID}},
			id("load.start:"+r.RunID))
	case StateTeardown:
		if err := s.bus.Publish(ctx, events.CollectRelease{ExperimentID: r.ExperimentID, RunID: r.RunID}, id("collect.release:"+r.RunID)); err != nil {
			return err
		}
		return s.bus.Publish(ctx, s.teardownCmd(r), id("teardown:"+r.RunID))
	case StateAnalyzing:
		mp, _ := r.Phase(StateMeasuring)
		bp, _ := r.Phase(StateBaseline)
		return s.bus.Publish(ctx, events.RunMeasured{ExperimentID: r.ExperimentID, RunID: r.RunID, ConfigHash: r.ConfigHash, Factors: r.Factors,
			Repetition: r.Repetition, Phases: r.Phases, MeasureStartMs: mp.StartMs, MeasureEndMs: mp.EndMs, BaselineStart: bp.StartMs,
			BaselineEnd: bp.EndMs, Targets: r.Targets, RecordsSent: r.RecordsSent, OfferedRate: r.Config.Workload.Rate(),
			RecordsDelivered: r.RecordsDelivered, DeliveredFromBroker: r.DeliveredFromBroker, RecordsMissed: r.RecordsMissed,
			RecordsBackfilled: r.RecordsBackfilled, LoadTakeovers: r.LoadTakeovers, LoadRestarts: r.LoadRestarts, LoadNote: r.LoadNote},
			id("measured:"+r.RunID))
	}
	return nil
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

// tick advances timed phases and starts pending runs within the limit. It
// reads the local view; every change goes through a revision-checked update.
func (s *Scheduler) tick(ctx context.Context) error {
	s.fireCron(ctx, s.clock.Now())
	now := s.nowMs()
	running := 0
	var pending []string
	for _, e := range s.view.active() {
		finished := true
		for _, rid := range e.RunIDs {
			r, ok := s.view.run(rid)
			switch {
			case ok && r.retryDue(s.cfg.Retries):
				// Normally created by the commit that failed the run; this
				// covers a crash in between.
				s.runMu.Lock()
				err := s.retry(ctx, r)
				s.runMu.Unlock()
				if err != nil {
					s.logger.Warn("schedule retry failed", zap.String("run_id", rid), zap.Error(err))
				}
			case !ok || Terminal(r.State):
				continue
			case r.State == StatePending:
				pending = append(pending, rid)
			default:
				running++
				if err := s.advance(ctx, rid, now); err != nil {
					s.logger.Warn("advance run failed", zap.String("run_id", rid), zap.Error(err))
				}
			}
			finished = false
		}
		if s.searchDue(e) {
			if err := s.advanceSearch(ctx, e.ID); err != nil {
				s.logger.Warn("capacity search step failed", zap.String("experiment_id", e.ID), zap.Error(err))
			}
			continue
		}
		if finished {
			if err := s.refreshExperiment(ctx, e.ID); err != nil {
				return err
			}
		}
	}
	s.runsActive.Set(float64(running))
	// Pending runs start in order as their cluster has a free slot. The
	// slot set in KV, not this scheduler's count, is the limit: other
	// schedulers start runs too.
	full := map[string]bool{}
	for _, rid := range pending {
		pr, ok := s.view.run(rid)
		if !ok {
			continue
		}
		cluster := clusterOf(pr)
		if full[cluster] || s.slotsFull(cluster) {
			full[cluster] = true
			continue
		}
		if e, ok := s.view.experiment(pr.ExperimentID); !ok || (e.State != "queued" && e.State != "running") {
			continue // cancelled meanwhile
		}
		took, err := s.takeSlot(ctx, cluster, rid)
		if err != nil {
			return err
		}
		if !took {
			full[cluster] = true
			continue
		}
		r, changed, err := s.updateRun(ctx, rid, func(r *RunRecord) (bool, error) {
			if r.State != StatePending {
				return false, nil
			}
			if e, ok := s.view.experiment(r.ExperimentID); !ok || (e.State != "queued" && e.State != "running") {
				return false, nil // cancelled meanwhile
			}
			return true, s.transition(ctx, r, StateProvisioning)
		})
		if err != nil {
			return err
		}
		if changed {
			_ = s.refreshExperiment(ctx, r.Value.ExperimentID)
		}
		// Not changed: another scheduler started it (it holds the slot
		// now), or it was cancelled (its final state frees the slot).
	}
	return nil
}

// advance performs a run's due timed transition or timeout, if any.
func (s *Scheduler) advance(ctx context.Context, runID string, now int64) error {
	r, changed, err := s.updateRun(ctx, runID, func(r *RunRecord) (bool, error) {
		timedOut := func(d time.Duration) bool { return now-r.EnteredMs > d.Milliseconds() }
		if r.LoadFailed != "" && (r.State == StateWarmup || r.State == StateMeasuring || r.State == StateCooldown) {
			r.Reason = "load generator failed: " + r.LoadFailed
			r.Transient = true
			return true, s.fail(ctx, r)
		}
		switch r.State {
		case StateProvisioning:
			if timedOut(s.cfg.ProvisionTimeout) {
				r.Reason = fmt.Sprintf("provisioning timed out after %s", s.cfg.ProvisionTimeout)
				r.Transient = true
				return true, s.fail(ctx, r)
			}
		case StateBaseline:
			if now >= r.PhaseEndMs {
				return true, s.transition(ctx, r, StateWarmup)
			}
		case StateWarmup:
			if now >= r.PhaseEndMs {
				return true, s.transition(ctx, r, StateMeasuring)
			}
		case StateMeasuring:
			if now >= r.PhaseEndMs {
				return true, s.transition(ctx, r, StateCooldown)
			}
		case StateCooldown:
			if now < r.PhaseEndMs {
				return false, nil
			}
			if r.LoadDone {
				return true, s.transition(ctx, r, StateTeardown)
			}
			if now-r.PhaseEndMs > s.cfg.LoadGrace.Milliseconds() {
				r.Reason = fmt.Sprintf("load generator did not report finishing within %s of the measured phase", s.cfg.LoadGrace)
				r.Transient = true
				return true, s.fail(ctx, r)
			}
		case StateTeardown:
			if r.TornDown {
				return true, s.transition(ctx, r, StateAnalyzing)
			}
			if timedOut(s.cfg.TeardownTimeout) {
				r.Reason = fmt.Sprintf("teardown not confirmed within %s", s.cfg.TeardownTimeout)
				if r.TeardownIssue != "" {
					r.Reason += ": " + r.TeardownIssue
				}
				r.Transient = true
				return true, s.transition(ctx, r, StateFailed)
			}
		case StateAnalyzing:
			if timedOut(s.cfg.AnalyzeTimeout) {
				r.Reason = fmt.Sprintf("analysis not reported within %s", s.cfg.AnalyzeTimeout)
				r.Transient = true
				return true, s.transition(ctx, r, StateFailed)
			}
		}
		// Still waiting for another service: re-send its command every
		// Resend. Each attempt has a message id of its own, so the stream
		// takes it even when the first one was stored and then lost to its
		// consumer (dead-lettered during an outage); within one attempt the
		// id is fixed, so two schedulers, or one after a restart, send it
		// once. Every command's handler is idempotent.
		if s.cfg.Resend > 0 {
			if n := int((now - r.EnteredMs) / s.cfg.Resend.Milliseconds()); n >= 1 && n > s.resent[r.RunID] {
				s.resent[r.RunID] = n
				if err := s.publishCommand(ctx, r, n); err != nil {
					s.logger.Warn("re-send failed", zap.String("run_id", r.RunID), zap.String("state", r.State), zap.Int("attempt", n), zap.Error(err))
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if changed {
		return s.refreshExperiment(ctx, r.Value.ExperimentID)
	}
	return nil
}

// persistRun queues the run row for ClickHouse, versioned by its KV
// revision so that the newest state wins whichever write lands last.
func (s *Scheduler) persistRun(_ context.Context, vr versioned[RunRecord]) {
	s.rows.add(runRow(vr))
}

// storeFinalRows writes every run row of a finished experiment from the
// local view, which holds each run's newest state even when the goroutine
// that made a transition has not queued its row yet: readers told that an
// experiment finished find all its runs stored.
func (s *Scheduler) storeFinalRows(ctx context.Context, e ExperimentRecord) {
	rows := make([]store.Run, 0, len(e.RunIDs))
	s.view.mu.RLock()
	for _, id := range e.RunIDs {
		if vr, ok := s.view.runs[id]; ok {
			rows = append(rows, runRow(vr))
		}
	}
	s.view.mu.RUnlock()
	if err := s.store.UpsertRuns(ctx, rows); err != nil {
		s.logger.Warn("store final run rows failed", zap.String("experiment_id", e.ID), zap.Error(err))
	}
}

func runRow(vr versioned[RunRecord]) store.Run {
	r := &vr.Value
	cfg, _ := json.Marshal(r.Config)
	factors, _ := json.Marshal(r.Factors)
	phases, _ := json.Marshal(r.Phases)
	mp, _ := r.Phase(StateMeasuring)
	return store.Run{ExperimentID: r.ExperimentID, RunID: r.RunID, Index: uint32(r.Index), Repetition: uint32(r.Repetition),
		Config: string(cfg), ConfigHash: r.ConfigHash, Factors: string(factors), State: r.State, Reason: r.Reason, Phases: string(phases),
		MeasureStartMs: mp.StartMs, MeasureEndMs: mp.EndMs, CreatedMs: r.CreatedMs, Version: vr.Revision}
}

// refreshExperiment recomputes an experiment's state from its runs (as the
// local view has them) and publishes it when it changed.
func (s *Scheduler) refreshExperiment(ctx context.Context, id string) error {
	cur, ok := s.view.experiment(id)
	if !ok {
		return nil
	}
	done, failed, started := s.view.counts(cur, s.cfg.Retries)
	total := len(cur.RunIDs)
	ve, changed, err := update(ctx, s.kv, expKey(id), func(e *ExperimentRecord) (bool, error) {
		state := e.State
		searching := e.Search != nil && !e.Search.Done
		switch {
		case e.State == "cancelled" || e.State == "failed" && done+failed == total:
		case searching && started > 0:
			state = "running"
		case searching:
		case done+failed == total && done == 0:
			state = "failed"
		case done+failed == total:
			state = "done"
		case started > 0:
			state = "running"
		}
		if state == e.State {
			return false, nil
		}
		e.State = state
		return true, nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	e := ve.Value
	s.view.putExperiment(ve)
	if changed && e.State != "queued" && e.State != "running" {
		s.storeFinalRows(ctx, e)
	}
	if changed {
		if err := s.store.SetExperimentState(ctx, id, e.State); err != nil {
			s.logger.Warn("store experiment state failed", zap.String("experiment_id", id), zap.Error(err))
		}
	}
	// A final state is announced only by the update that set it (after its
	// rows are stored); progress of an unfinished one by anyone.
	if changed || (done+failed > 0 && (e.State == "queued" || e.State == "running")) {
		s.publishExperiment(ctx, e, done, failed, e.Reason)
	}
	return nil
}

func (s *Scheduler) publishExperiment(ctx context.Context, e ExperimentRecord, done, failed int, reason string) {
	msgID := fmt.Sprintf("experiment.state:%s:%s:%d:%d", e.ID, e.State, done, failed)
	if err := s.bus.Publish(ctx, events.ExperimentState{ExperimentID: e.ID, Name: e.Name, State: e.State, RunsTotal: len(e.RunIDs),
		RunsDone: done, RunsFailed: failed, Reason: reason, TsMs: s.nowMs()}, msgID); err != nil {
		s.logger.Warn("publish experiment state failed", zap.String("experiment_id", e.ID), zap.Error(err))
	}
}

// kubernetesSUT is the wire form of a spec's kubernetes block.
func kubernetesSUT(k *spec.KubernetesSUT) *events.KubernetesSUT {
	if k == nil {
		return nil
	}
	return &events.KubernetesSUT{Image: k.Image, ImagePullPolicy: k.ImagePullPolicy, Replicas: k.Replicas,
		CPU: k.Resources.CPU, Memory: k.Resources.Memory, Env: k.Env, KafkaBootstrap: k.KafkaBootstrap,
		SchemaRegistryURL: k.SchemaRegistryURL, Manifest: k.Manifest, ReadyTimeoutMs: k.ReadyTimeout.Milliseconds(),
		Placement: events.Placement{Strategy: k.Placement.Strategy, Nodes: k.Placement.Nodes, NodeSelector: k.Placement.NodeSelector}}
}
