package testenv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestRunningStopCancelsAndReturnsTheError(t *testing.T) {
	r := testenv.Go(t, context.Background(), func(ctx context.Context) error { <-ctx.Done(); return errors.New("stopped: " + ctx.Err().Error()) })
	require.NoError(t, r.Err(), "no error while running")
	require.EqualError(t, r.Stop(10*time.Second, "the loop"), "stopped: context canceled")
	<-r.Exited()
	require.EqualError(t, r.Err(), "stopped: context canceled")
}

func TestRunningWaitDoesNotCancel(t *testing.T) {
	release := make(chan struct{})
	r := testenv.Go(t, context.Background(), func(ctx context.Context) error {
		select {
		case <-release:
			return errors.New("released")
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(release)
	require.EqualError(t, r.Wait(10*time.Second, "the job"), "released")
}

// The cleanup of a test that never stopped its goroutine cancels it and
// waits for it: the goroutine does not outlive the test.
func TestRunningEndsWithTheTest(t *testing.T) {
	var r *testenv.Running
	t.Run("leaves it running", func(t *testing.T) {
		r = testenv.Go(t, context.Background(), func(ctx context.Context) error { <-ctx.Done(); return nil })
	})
	select {
	case <-r.Exited():
	default:
		t.Fatal("the goroutine outlived its test")
	}
}

func TestCounterValueSumsTheMatchingSamples(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"consumer", "outcome"})
	reg.MustRegister(c)
	c.WithLabelValues("a", "ok").Add(2)
	c.WithLabelValues("a", "failed").Add(3)
	c.WithLabelValues("b", "ok").Add(5)
	require.Equal(t, 10.0, testenv.CounterValue(t, reg, "x_total", nil))
	require.Equal(t, 5.0, testenv.CounterValue(t, reg, "x_total", map[string]string{"consumer": "a"}))
	require.Equal(t, 2.0, testenv.CounterValue(t, reg, "x_total", map[string]string{"consumer": "a", "outcome": "ok"}))
	require.Zero(t, testenv.CounterValue(t, reg, "y_total", nil))
}

func TestReceive(t *testing.T) {
	ch := make(chan string, 1)
	ch <- "addr"
	require.Equal(t, "addr", testenv.Receive(t, ch, 10*time.Second, "a value"))
	closed := make(chan struct{})
	close(closed)
	testenv.Receive(t, closed, 10*time.Second, "a closed channel")
}

func TestGate(t *testing.T) {
	g := testenv.NewGate()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, g.Wait(ctx), context.Canceled, "a closed gate holds until the context ends")
	g.Open()
	require.NoError(t, g.Wait(context.Background()))
	require.NoError(t, g.Wait(context.Background()), "an open gate stays open")
}
