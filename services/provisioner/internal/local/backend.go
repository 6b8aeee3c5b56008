// Package local is the provisioner's local backend: it runs a run's system
// under test as processes of this machine and reports their pids as
// measurement targets. Each SUT runs under a small shell shim in a session
// and process group of its own, with no parent-death signal, its output in
// a log file and its exit status written to a file by the shim: the SUT
// outlives a provisioner that dies. Everything needed to find it again —
// pid and start time, process group, files — is in the run's record
// (package state), written before and right after the start, and every
// process carries the run's markers in its environment; so a restarted
// provisioner, or another one on the same node, adopts it, watches it, and
// can stop it.
package local

import (
	"cmp"
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Deps are the backend's collaborators.
type Deps struct {
	// Store holds the runs' records; required.
	Store  *state.Store
	Logger *zap.Logger
	// Clock times start-up, polls and stops (default: the real clock).
	Clock clock.Clock
}

// Backend runs processes; safe for concurrent use.
type Backend struct {
	cfg     Config
	store   *state.Store
	logger  *zap.Logger
	clock   clock.Clock
	proc    procs
	watches poll.Watches[state.Entry]
}

// New builds the backend; no I/O.
func New(cfg Config, d Deps) (*Backend, error) {
	err := cfg.Validate()
	if d.Store == nil {
		err = errors.Join(err, errors.New("local backend: no record store (Deps.Store)"))
	}
	if err != nil {
		return nil, err
	}
	d.Logger, d.Clock = cmp.Or(d.Logger, zap.NewNop()), cmp.Or[clock.Clock](d.Clock, clock.RealClock{})
	return &Backend{cfg: cfg, store: d.Store, logger: d.Logger.With(zap.String("component", "local-backend")), clock: d.Clock,
		proc: procs{FS: procfs.FS{Root: cfg.ProcRoot}, node: cfg.Node, clock: d.Clock}}, nil
}

// Node is the machine this backend runs processes on.
func (b *Backend) Node() string { return b.cfg.Node }

// Key is the record of run runID.
func (b *Backend) Key(runID string) string { return state.LocalKey(runID) }

// Owns reports whether this backend can stop the run of rec: it runs on
// this node.
func (b *Backend) Owns(rec state.Record) bool {
	return rec.Backend == "local" && rec.Node == b.cfg.Node
}

// TeardownBound is the longest one removal may take.
func (b *Backend) TeardownBound() time.Duration { return b.cfg.StopTimeout + 10*time.Second }

// Close stops watching. The processes keep running for the next
// provisioner to adopt, unless StopOnShutdown: then they are stopped, and
// their records say so (the run cannot go on).
func (b *Backend) Close() {
	runs := b.watches.Close()
	if !b.cfg.StopOnShutdown {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.TeardownBound())
	defer cancel()
	for _, e := range runs {
		b.stopAtShutdown(ctx, e, e.Rec.Process)
	}
}

// stopAtShutdown stops a run's processes as its provisioner stops, and
// records so: the run cannot go on, and whoever adopts its record reports
// it.
func (b *Backend) stopAtShutdown(ctx context.Context, e state.Entry, pr *state.Process) {
	if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
		if r.Process == nil {
			return false, nil
		}
		r.Process.Signalled, r.Process.StoppedAtShutdown = true, true
		return true, nil
	}); err != nil {
		b.logger.Warn("record the stop of a run's process failed", zap.String("run_id", e.Rec.RunID), zap.Error(err))
	}
	pgid := 0
	if pr != nil {
		pgid = pr.PGID
	}
	if err := b.proc.stop(ctx, b.store.Platform(), e.Rec.RunID, pgid, b.cfg.StopTimeout, 50*time.Millisecond); err != nil {
		b.logger.Warn("stop a run's process at shutdown failed", zap.String("run_id", e.Rec.RunID), zap.Error(err))
	}
}
