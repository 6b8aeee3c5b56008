package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// Another experiment's events failing the check start no give-up clock
// for the watched one (its own may all pass, with minutes between them on
// a cluster); one of its own does.
func TestAnotherExperimentsUnverifiedEventsDoNotEndTheWatch(t *testing.T) {
	t.Parallel()
	var stderr strings.Builder
	u := newUnverifiedReport("trust.json", 200*time.Millisecond, &stderr)
	u.watch("mine")
	unverified := func(experiment string) {
		require.NoError(t, u.Write(zapcore.Entry{Level: zapcore.WarnLevel}, []zapcore.Field{
			zap.Error(fmt.Errorf("experiment.state: %w", bus.ErrUnverified)), zap.String(bus.LogFieldExperiment, experiment)}))
	}
	ended := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { ended <- u.wait(ctx, make(chan struct{}), "mine") }()

	unverified("theirs")
	require.Contains(t, stderr.String(), "skipped an event", "reported all the same")
	select {
	case err := <-ended:
		t.Fatalf("the watch gave up on another experiment's events: %v", err)
	case <-time.After(time.Second): // five times the wait
	}
	unverified("mine")
	err := testenv.Receive(t, ended, 10*time.Second, "the watch to give up")
	require.ErrorContains(t, err, "no event of experiment mine passed the check")
	cancel()
}
