package testenv

import "context"

// Gate holds back whatever waits on it — an Init standing for a view that
// has not synced yet — until the test opens it.
type Gate chan struct{}

// NewGate returns a closed-for-now gate.
func NewGate() Gate { return make(Gate) }

// Open lets every waiter through, now and later. Call it once.
func (g Gate) Open() { close(g) }

// Wait returns nil once the gate is open, or ctx's error if ctx ends first.
func (g Gate) Wait(ctx context.Context) error {
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
