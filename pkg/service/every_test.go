package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// Every calls f on each tick of its clock and on each wake-up, and returns
// when its context ends.
func TestEveryTicksWakesAndStops(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	wake := make(chan struct{})
	calls := make(chan struct{}, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		service.Every(ctx, clk, time.Second, wake, func() { calls <- struct{}{} })
		close(done)
	}()
	testenv.Eventually(t, 10*time.Second, "the ticker is waiting", clk.HasWaiters)
	clk.Step(time.Second)
	testenv.Receive(t, calls, 10*time.Second, "a call on the tick")
	wake <- struct{}{}
	testenv.Receive(t, calls, 10*time.Second, "a call on the wake-up")
	require.Empty(t, calls, "no call without a tick or a wake-up")
	cancel()
	testenv.Receive(t, done, 10*time.Second, "Every returned after its context ended")
	require.Empty(t, calls, "no call after the context ended")
}
