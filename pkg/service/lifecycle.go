package service

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
)

// ShutdownTimeout is how long a draining component may take after its
// context is cancelled where it bounds its own drain (the HTTP server).
const ShutdownTimeout = 10 * time.Second

// Component is the lifecycle every long-running part follows: Run blocks until
// ctx ends and returns nil on a clean cancel.
type Component interface {
	Run(ctx context.Context) error
}

// Checker is implemented by a component that can tell whether it is able
// to do its work right now (its NATS consumers and KV buckets are there, its
// broker is reachable, ...): nil means ready. /healthz reports not ready,
// with the reason, while any component's Check fails. Check is called from
// HTTP handlers: it must be cheap and safe for concurrent use (report state
// kept by the component, do no I/O).
type Checker interface {
	Check() error
}

// Initializer is implemented by a component that has work to finish
// before it can serve — declare its consumers, sync a KV view. The Group
// calls Init before Run; the component counts as started (and /healthz can
// say ready) only once Init has returned nil. An Init error fails the
// group, so the service exits non-zero.
type Initializer interface {
	Init(ctx context.Context) error
}

// Func adapts a function to Component.
type Func func(ctx context.Context) error

// Run implements Component.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Group runs components together: every one's Init (when it is an
// Initializer), then its Run; when one returns — with an error or not — the
// others are cancelled, and Run returns the first error, prefixed with the
// component's name. It is a Checker: not ready while any component is
// starting (Init not done) or stopped, or its own Check fails, each
// problem under the component's name.
//
// A Group is the one way to supervise goroutines, at a binary's top level
// (svcmain, the dev stack) and inside a component: a component's Run adds
// its consumers, watchers and loops to a Group and returns g.Run(ctx), and
// its Check returns g.Check(), so /healthz names what inside it is not
// ready ("scheduler: view: starting"). A Group added to a Group nests the
// same way. The zero value is ready to use; add every component before Run,
// and run a Group once.
type Group struct {
	names  []string
	comps  []Component
	states []*atomic.Int32
	ran    atomic.Bool
}

// Component states, for Check.
const (
	stateStarting int32 = iota
	stateRunning
	stateStopped
)

// Add registers a named component.
func (g *Group) Add(name string, c Component) {
	g.names = append(g.names, name)
	g.comps = append(g.comps, c)
	g.states = append(g.states, new(atomic.Int32))
}

// Go registers a function as a named component: a loop, a watcher.
func (g *Group) Go(name string, run func(ctx context.Context) error) { g.Add(name, Func(run)) }

// Check reports every component that is not ready, by name.
func (g *Group) Check() error {
	var errs []error
	for i, c := range g.comps {
		switch g.states[i].Load() {
		case stateStarting:
			errs = append(errs, fmt.Errorf("%s: starting", g.names[i]))
		case stateStopped:
			errs = append(errs, fmt.Errorf("%s: stopped", g.names[i]))
		default:
			if ch, ok := c.(Checker); ok {
				if err := ch.Check(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", g.names[i], err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ErrGroupRan is returned by a Group's second Run.
var ErrGroupRan = errors.New("service group already ran")

// Run initializes (Initializer) and starts every component and blocks
// until all have stopped: once one stops (or ctx ends), the others' context
// is cancelled, and each must then return — bounding its own drain (the
// HTTP server's is ShutdownTimeout); a component that never returns holds
// Run.
func (g *Group) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return ErrGroupRan
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rg run.Group
	for i, c := range g.comps {
		name, c, state := g.names[i], c, g.states[i]
		rg.Add(func() error {
			defer state.Store(stateStopped)
			if in, ok := c.(Initializer); ok {
				if err := in.Init(ctx); err != nil {
					if ctx.Err() != nil {
						return nil // stopped while starting
					}
					return fmt.Errorf("%s: init: %w", name, err)
				}
			}
			if ctx.Err() == nil {
				state.Store(stateRunning)
			}
			if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}, func(error) { cancel() })
	}
	// A component that returns nil while the context is live ends the group;
	// that is intended (e.g. a one-shot job), but cancellation must propagate.
	rg.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	return rg.Run()
}
