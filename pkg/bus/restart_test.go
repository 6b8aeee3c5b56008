package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// A consumer keeps receiving across a NATS server restart — with its store,
// and with an empty one (stream and durable consumer gone: the bus declares
// them again) — and Check says not ready during the outage, ready after.
func TestConsumerResumesAfterNATSRestart(t *testing.T) {
	t.Parallel()
	for _, emptyStore := range []bool{false, true} {
		name := map[bool]string{false: "same_store", true: "empty_store"}[emptyStore]
		t.Run(name, func(t *testing.T) {
			srv := testenv.NewRestartableNATS(t)
			b, reg := newBusAt(t, srv.URL())
			ctx := t.Context()

			c, got := receiving(b, "restart-test")
			require.ErrorContains(t, b.Check(), "consumer restart-test: not started", "declared but not running: not ready")
			consumer := testenv.Go(t, ctx, c.Run)
			testenv.Eventually(t, 10*time.Second, "consumer ready", func() bool { return b.Check() == nil })

			require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "before"}, ""))
			testenv.Eventually(t, 10*time.Second, "message before the restart", func() bool { return got.has("before") })

			back := restartNATS(t, srv, b, emptyStore, c.Check)

			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			require.NoError(t, b.Publish(pctx, events.LoadStop{ExperimentID: "e", RunID: "after"}, ""))
			pcancel()
			testenv.Eventually(t, 20*time.Second, "message published after the restart", func() bool { return got.has("after") })
			t.Logf("the first message after the restart handled %s after the server was back", time.Since(back).Round(time.Millisecond))
			require.Equal(t, 1, got.count("before"), "an acknowledged message is not handled again")

			redeclared := testenv.CounterValue(t, reg, "greenflow_bus_consumers_redeclared_total", map[string]string{"consumer": "restart-test"})
			if emptyStore {
				require.Equal(t, 1.0, redeclared, "the lost durable consumer was declared again")
			} else {
				require.Equal(t, 0.0, redeclared, "the stored durable consumer was reused")
			}
			// Dead letters work again too: their stream is back.
			sub, err := b.JetStream().Stream(ctx, bus.StreamDeadLetter)
			require.NoError(t, err)
			require.Equal(t, bus.StreamDeadLetter, sub.CachedInfo().Config.Name)

			require.NoError(t, consumer.Stop(15*time.Second, "the consumer"))
		})
	}
}

// A consumer whose durable consumer is deleted under it (an operator, a
// purge) declares it again and goes on.
func TestConsumerRedeclaresADeletedDurableConsumer(t *testing.T) {
	t.Parallel()
	b, reg := newBusWithRegistry(t)
	ctx := t.Context()
	c, got := receiving(b, "deleted-test")
	testenv.Go(t, ctx, c.Run)
	testenv.Eventually(t, 10*time.Second, "consumer ready", func() bool { return b.Check() == nil })
	require.NoError(t, b.JetStream().DeleteConsumer(ctx, bus.StreamLifecycle, "deleted-test"))
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "after-delete"}, ""))
	testenv.Eventually(t, 20*time.Second, "message after the consumer was deleted", func() bool { return got.has("after-delete") })
	require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_bus_consumers_redeclared_total", map[string]string{"consumer": "deleted-test"}))
	require.NoError(t, b.Check())
}

// A consumer that cannot start returns the error from Run (so the component
// and the service fail), and says why in Check meanwhile.
func TestConsumerThatCannotStartFails(t *testing.T) {
	t.Parallel()
	b, _ := newBusWithRegistry(t)
	c := b.NewRawConsumer("NO_SUCH_STREAM", bus.ConsumerSpec{Durable: "orphan"}, []string{"nowhere.>"},
		func(context.Context, jetstream.Msg, *jetstream.MsgMetadata) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.Run(ctx)
	require.ErrorContains(t, err, "declare consumer orphan")
	require.ErrorContains(t, err, "stream not found")
	require.NoError(t, b.Check(), "a consumer that returned is no longer the bus's concern")
}

// Expected consumers keep Check not ready until a consumer of each has
// consumed (an instance suffix matched by *), even before anyone built it.
func TestExpectedConsumersHoldReadinessUntilTheyConsume(t *testing.T) {
	t.Parallel()
	b, _ := newBusWithRegistry(t)
	b.Expect(bus.ExpectedConsumers("energy-collector")...)
	b.Expect(bus.ExpectedConsumers("analyzer")...)
	err := b.Check()
	require.ErrorContains(t, err, "consumer energy-collector-*: not started")
	require.ErrorContains(t, err, "consumer analyzer: not started")
	require.ErrorContains(t, err, "consumer analyzer-recorder: not started")
	ctx := t.Context()
	nop := func(context.Context, bus.Delivery) error { return nil }
	for _, spec := range []bus.ConsumerSpec{bus.ConsumerCollector("host-a/1"), bus.ConsumerAnalyzer, bus.ConsumerRecorder} {
		consume(t, ctx, b, spec, nop)
	}
	testenv.Eventually(t, 10*time.Second, "ready once all three consume", func() bool { return b.Check() == nil })
}
