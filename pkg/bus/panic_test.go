package bus_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// A handler that panics costs one message, never the consumer: the message
// is dead-lettered with "panic: <value>", the dead-letter hook is told, the
// panic is counted, and the next messages — of the same run too — are
// handled. Checked for a single-worker consumer and for one with Workers.
func TestPanickingHandlerIsDeadLetteredAndTheConsumerKeepsServing(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 4} {
		t.Run(map[int]string{1: "one_worker", 4: "four_workers"}[workers], func(t *testing.T) {
			b, reg := newBusWithRegistry(t)
			ctx := t.Context()
			spec := bus.ConsumerSpec{Durable: "panicky", Types: []events.Type{events.TypeLoadStop}, Workers: workers}
			var mu sync.Mutex
			var handled []string
			hooked := make(chan string, 4)
			consumer := testenv.Go(t, ctx, func(ctx context.Context) error {
				return b.Consume(ctx, spec, func(_ context.Context, d bus.Delivery) error {
					m := d.Msg.(*events.LoadStop)
					if m.ExperimentID == "boom" {
						var nilMap map[string]int
						nilMap["x"]++ // a real runtime panic: assignment to entry in nil map
					}
					mu.Lock()
					handled = append(handled, m.ExperimentID)
					mu.Unlock()
					return nil
				}, bus.OnDeadLetter(func(_ context.Context, h nats.Header, reason string) {
					hooked <- h.Get(bus.HeaderExperiment) + " " + reason
				}))
			})
			require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "before", RunID: "r1"}, ""))
			require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "boom", RunID: "r1"}, ""))
			require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "after", RunID: "r1"}, ""))

			testenv.Eventually(t, 10*time.Second, "messages around the panic handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(handled) == 2
			})
			mu.Lock()
			require.Equal(t, []string{"before", "after"}, handled, "the run's order is kept around the dead letter")
			mu.Unlock()

			dead := dlq(t, b, 1)
			require.Equal(t, "boom", dead[0].Headers().Get(bus.HeaderExperiment))
			require.Equal(t, "panic: assignment to entry in nil map", dead[0].Headers().Get(bus.HeaderDLQReason))
			require.Equal(t, "1", dead[0].Headers().Get(bus.HeaderDLQDeliver), "dead-lettered at the first delivery, not retried")
			require.Equal(t, "boom panic: assignment to entry in nil map",
				testenv.Receive(t, hooked, 10*time.Second, "dead-letter hook told of the panicking message"))
			require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_bus_handler_panics_total", map[string]string{"consumer": "panicky"}))
			require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_bus_messages_dead_lettered_total", map[string]string{"consumer": "panicky"}))

			require.NoError(t, consumer.Stop(10*time.Second, "the consumer"), "the consumer ran on until cancelled")
		})
	}
}

// A panic in the dead-letter hook itself is contained too.
func TestPanickingDeadLetterHookDoesNotStopTheConsumer(t *testing.T) {
	t.Parallel()
	b, reg := newBusWithRegistry(t)
	ctx := t.Context()
	spec := bus.ConsumerSpec{Durable: "hook-panics", Types: []events.Type{events.TypeLoadStop}}
	handled := make(chan string, 4)
	consume(t, ctx, b, spec, func(_ context.Context, d bus.Delivery) error {
		m := d.Msg.(*events.LoadStop)
		if m.ExperimentID == "reject" {
			return bus.Permanent(errTest)
		}
		handled <- m.ExperimentID
		return nil
	}, bus.OnDeadLetter(func(context.Context, nats.Header, string) { panic("hook defect") }))
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "reject", RunID: "r1"}, ""))
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "next", RunID: "r1"}, ""))
	require.Equal(t, "next", testenv.Receive(t, handled, 10*time.Second, "the next message handled after the dead-letter hook panicked"))
	require.Len(t, dlq(t, b, 1), 1)
	require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_bus_handler_panics_total", map[string]string{"consumer": "hook-panics"}))
}

// A request-reply handler wrapped by SafeMsgHandler answers a panic with an
// error reply and goes on answering.
func TestSafeMsgHandlerAnswersAPanicWithAnErrorAndKeepsServing(t *testing.T) {
	t.Parallel()
	b, reg := newBusWithRegistry(t)
	nc := b.Conn()
	sub, err := nc.QueueSubscribe("test.api", "q", b.SafeMsgHandler("test.api", func(m *nats.Msg) {
		if string(m.Data) == "boom" {
			panic("request defect")
		}
		_ = m.Respond([]byte(`{"ok":true}`))
	}))
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	client := testenv.NATSConn(t, nc.ConnectedUrl())

	rep, err := client.Request("test.api", []byte("boom"), 5*time.Second)
	require.NoError(t, err, "the requester gets an answer, not a timeout")
	var body map[string]string
	require.NoError(t, json.Unmarshal(rep.Data, &body))
	require.Equal(t, "internal error: panic: request defect", body["error"])

	rep, err = client.Request("test.api", []byte("fine"), 5*time.Second)
	require.NoError(t, err, "still serving after the panic")
	require.JSONEq(t, `{"ok":true}`, string(rep.Data))
	require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_bus_handler_panics_total", map[string]string{"consumer": "test.api"}))
}
