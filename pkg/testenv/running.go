package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Running is a blocking call — a component's Run, a consumer, a server —
// that a test started in a goroutine. Tests stop it and check how it ended
// through Stop and Wait, never by hand-rolled channels and selects, so that
// a call that does not return fails the test instead of hanging it.
type Running struct {
	tb     testing.TB
	cancel context.CancelFunc
	exited chan struct{}
	err    error
}

// Go runs run in a goroutine under a context derived from ctx that Stop —
// or, at the latest, the end of the test — cancels. The cleanup waits for
// run to return, so it never outlives what the test set up before it.
func Go(tb testing.TB, ctx context.Context, run func(context.Context) error) *Running {
	tb.Helper()
	ctx, cancel := context.WithCancel(ctx)
	r := &Running{tb: tb, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		r.err = run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(time.Minute):
			tb.Errorf("a goroutine the test started did not return a minute after the test ended")
		}
	})
	return r
}

// Exited is closed once run has returned; Err then holds its error.
func (r *Running) Exited() <-chan struct{} { return r.exited }

// Err is what run returned; nil until Exited is closed.
func (r *Running) Err() error {
	select {
	case <-r.exited:
		return r.err
	default:
		return nil
	}
}

// Wait waits up to within for run to return on its own and returns its
// error; the test fails (naming what) if it does not.
func (r *Running) Wait(within time.Duration, what string) error {
	r.tb.Helper()
	select {
	case <-r.exited:
		return r.err
	case <-time.After(within):
		r.tb.Fatalf("%s did not return within %s", what, within)
		return nil
	}
}

// Stop cancels run's context and waits up to within for it to return, and
// returns its error; the test fails (naming what) if it does not stop.
func (r *Running) Stop(within time.Duration, what string) error {
	r.tb.Helper()
	r.cancel()
	return r.Wait(within, what)
}

// Receive waits up to within for a value on ch — a closed channel counts,
// with its zero value — and returns it; the test fails, naming what it
// waited for, when none comes.
func Receive[T any](tb testing.TB, ch <-chan T, within time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		tb.Fatalf("%s: nothing within %s", what, within)
		var zero T
		return zero
	}
}

// CounterValue sums the samples of the counter family name in g whose
// labels include every pair of want (nil: all samples): what a dashboard
// shows for that selector.
func CounterValue(tb testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	require.NoError(tb, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if hasAll(labels, want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasAll(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}
