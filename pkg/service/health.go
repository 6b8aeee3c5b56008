package service

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Health is what /healthz serves: ready when SetReady(true) was called and
// every added Checker passes; otherwise 503 with every reason.
type Health struct {
	ready  atomic.Bool
	mu     sync.Mutex
	checks []namedCheck
}

type namedCheck struct {
	name string
	c    Checker
}

// SetReady marks the service ready (or not), on top of the checks.
func (h *Health) SetReady(v bool) { h.ready.Store(v) }

// Add makes readiness depend on c; its problems are reported under name
// ("" reports them as they are, e.g. for a Group that names its own).
func (h *Health) Add(name string, c Checker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, c})
}

// Check is nil when the service is ready, or every reason it is not.
func (h *Health) Check() error {
	var errs []error
	if !h.ready.Load() {
		errs = append(errs, errors.New("starting"))
	}
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()
	for _, nc := range checks {
		err := nc.c.Check()
		switch {
		case err == nil:
		case nc.name == "":
			errs = append(errs, err)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", nc.name, err))
		}
	}
	return errors.Join(errs...)
}
