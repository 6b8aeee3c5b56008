// Package scheduler owns experiments and runs: it validates and expands
// submitted specs, drives each run through its state machine by publishing
// commands and reacting to events, and keeps all state in JetStream KV with
// revision-checked writes so a restarted scheduler resumes where it stopped.
//
// Where things are: scheduler.go the lifecycle (New, Init, Run, Check);
// config.go its configuration; experiments.go submissions, cancellation and
// an experiment's state; handlers.go how each other service's event moves a
// run; runs.go the run state machine (transitions, their commit, timed
// phases); tick.go the periodic loop that starts pending runs and advances
// timed ones; sweep.go the part that carries out cancellations (stops and
// cancels the runs, then announces); commands.go the commands a state sends; retries.go new
// attempts of failed runs; slots.go the concurrency limit shared by every
// scheduler; search.go the capacity search; trigger.go templates that run on
// an event or a schedule; api.go the HTTP and NATS API; records.go and kv.go
// the KV records and their revision-checked access; view.go the local copy
// of the bucket; rows.go the run rows in ClickHouse.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
)

// Bucket is the KV bucket holding experiment and run state.
const Bucket = bus.BucketScheduler

// Store is what the scheduler writes to ClickHouse.
type Store interface {
	UpsertExperiment(ctx context.Context, e store.Experiment) error
	UpsertRuns(ctx context.Context, runs []store.Run) error
	ResultsReader
	SetExperimentState(ctx context.Context, experimentID, state string) error
}

var _ Store = (*store.Store)(nil)

// Deps are the scheduler's collaborators.
type Deps struct {
	Bus      *bus.Bus
	Store    Store
	Logger   *zap.Logger
	Registry prometheus.Registerer // nil: metrics are not registered
	// Clock drives timed phases, the tick and cron triggers; nil is the
	// real clock.
	Clock clock.WithTicker
}

// Scheduler drives experiments and their runs; see the package comment.
type Scheduler struct {
	// guard and tokens protect the HTTP API (pkg/auth).
	guard  *auth.Guard
	tokens *auth.Tokens
	cfg    Config
	bus    *bus.Bus
	store  Store
	logger *zap.Logger
	clock  clock.WithTicker

	// parts are the goroutines Run supervises: the view's watch, the event
	// consumer, the tick, the cancellation sweep, the expander, the row
	// writer and the trigger consumer.
	parts  service.Group
	events *bus.Consumer
	// sweepWake has the sweep (sweep.go) look at once, expandWake the
	// expander (submission.go).
	sweepWake, expandWake chan struct{}

	kv      kvStore
	view    *view
	watch   jetstream.KeyWatcher // opened by Init, followed by Run
	rows    *rowWriter
	results ResultsReader // the store's results, for the capacity search
	runMu   sync.Mutex    // see updateRun
	// resent is the last re-send attempt of each waiting run's command
	// (guarded by runMu); a restart forgets it, and re-sends the current
	// attempt under the same id, which the stream drops.
	resent map[string]int
	// armed is closed once a subject trigger is armed: the trigger
	// consumer starts then.
	armed     chan struct{}
	armedOnce sync.Once
	// wrapKV, when set (by tests), wraps the state bucket, e.g. to inject
	// faults.
	wrapKV func(jetstream.KeyValue) jetstream.KeyValue

	transitions *prometheus.CounterVec
	runsActive  prometheus.Gauge
}

var (
	_ service.Initializer = (*Scheduler)(nil)
	_ service.Checker     = (*Scheduler)(nil)
)

// New builds a scheduler; it does no I/O.
func New(cfg Config, d Deps) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Bus == nil || d.Logger == nil {
		return nil, errors.New("scheduler: a bus and a logger are required")
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	logger := d.Logger.With(zap.String("component", "scheduler"))
	s := &Scheduler{cfg: cfg, bus: d.Bus, store: d.Store, logger: logger, clock: d.Clock,
		view: newView(), resent: map[string]int{}, armed: make(chan struct{}), sweepWake: make(chan struct{}, 1),
		expandWake: make(chan struct{}, 1),
		rows:       newRowWriter(d.Store, logger, d.Clock), results: d.Store,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_scheduler_run_transitions_total",
			Help: "Run state transitions, by target state."}, []string{"state"}),
		runsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "greenflow_scheduler_runs_active",
			Help: "Runs between provisioning and analysis."}),
	}
	s.tokens = auth.OnBus(d.Bus, d.Clock)
	s.guard = auth.NewGuard(s.tokens, cfg.HTTP, d.Clock, d.Logger) // it names its own component
	if err := service.Register(d.Registry, "scheduler", s.transitions, s.runsActive); err != nil {
		return nil, err
	}
	s.events = d.Bus.NewConsumer(bus.ConsumerScheduler, s.handler(), bus.OnDeadLetterBody(s.onDeadLetter))
	s.parts.Add("state watch", service.Func(s.followView))
	s.parts.Add("events", untilCancelled(s.events.Run))
	s.parts.Add("tick", service.Func(s.tickLoop))
	s.parts.Add("cancellation sweep", service.Func(s.sweepLoop))
	s.parts.Add("expander", service.Func(s.expandLoop))
	s.parts.Add("run rows", service.Func(s.rows.run))
	s.parts.Add("trigger consumer", untilCancelled(s.consumeTriggers))
	return s, nil
}

// ErrNotReady is returned (and served as 503) while the scheduler's view of
// its KV state is not loaded: an unknown experiment then may well exist.
var ErrNotReady = errors.New("scheduler not ready: its state in KV is not loaded yet")

// Init opens the state bucket and loads the view of it; the scheduler is
// not ready (Check) until it has. The watch it opens lives on ctx, so ctx
// must last as long as Run (service.Group passes the same).
func (s *Scheduler) Init(ctx context.Context) error {
	kv, err := s.bus.KV(ctx, Bucket)
	if err != nil {
		return err
	}
	if s.wrapKV != nil {
		kv = s.wrapKV(kv)
	}
	s.kv = kvStore{kv}
	w, err := s.view.load(ctx, kv)
	if err != nil {
		return err
	}
	s.watch = w
	if err := s.adoptAdminToken(ctx); err != nil {
		return err
	}
	if n := len(s.view.active()); n > 0 {
		s.logger.Info("resuming unfinished experiments", zap.Int("experiments", n))
	}
	if len(s.view.triggerSubjects()) > 0 {
		s.armTriggerConsumer()
	}
	return nil
}

// adoptAdminToken adopts the token in Config.AdminTokenFile, if any, as
// the admin token cluster-admin (pkg/auth.Store.Adopt: once; a revoked one
// stays revoked, which only a warning reports).
func (s *Scheduler) adoptAdminToken(ctx context.Context) error {
	if s.cfg.AdminTokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.cfg.AdminTokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		// The deployment names the file in every scheduler's Secret; one
		// made by hand may have no token to adopt.
		s.logger.Info("no admin token to adopt", zap.String("file", s.cfg.AdminTokenFile))
		return nil
	}
	if err != nil {
		return fmt.Errorf("read --admin-token-file: %w", err)
	}
	tokens, err := s.tokens.Store(ctx)
	if err != nil {
		return err
	}
	t, err := tokens.Adopt(ctx, "cluster-admin", auth.Admin, strings.TrimSpace(string(b)))
	switch {
	case errors.Is(err, auth.ErrRevoked):
		s.logger.Warn("the token in --admin-token-file was revoked; not adopted again", zap.String("token_id", t.ID))
		return nil
	case err != nil:
		return fmt.Errorf("--admin-token-file %s: %w", s.cfg.AdminTokenFile, err)
	}
	s.logger.Info("admin token adopted", zap.String("token_id", t.ID), zap.String("name", t.Name))
	return nil
}

// Check reports whether the scheduler can answer and drive runs: only once
// its view of the state bucket has loaded, and while every part of Run
// runs.
func (s *Scheduler) Check() error {
	if !s.view.isSynced() {
		return ErrNotReady
	}
	if err := s.parts.Check(); err != nil {
		return fmt.Errorf("scheduler not running: %w", err)
	}
	return nil
}

// Run consumes events and drives runs until ctx ends; Init must have
// succeeded. When a part fails — the event consumer or the trigger consumer
// cannot start, the state watch breaks — the others stop and Run returns
// the cause.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.watch == nil {
		return errors.New("scheduler: Run called before Init")
	}
	defer func() { _ = s.watch.Stop() }()
	return s.parts.Run(ctx)
}

// untilCancelled makes a part that returns while its context is live an
// error: each part of the scheduler is meant to run as long as it does.
func untilCancelled(run func(context.Context) error) service.Func {
	return func(ctx context.Context) error {
		if err := run(ctx); err != nil {
			return err
		}
		if ctx.Err() == nil {
			return errors.New("stopped unexpectedly")
		}
		return nil
	}
}

// followView keeps the view up to date with the bucket until ctx ends.
func (s *Scheduler) followView(ctx context.Context) error {
	return s.view.follow(ctx, s.watch, false)
}

func (s *Scheduler) nowMs() int64 { return s.clock.Now().UnixMilli() }
