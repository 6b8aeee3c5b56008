package bus_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMalformedCommandIsDeadLetteredAndNextValidIsProcessed(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := t.Context()
	var mu sync.Mutex
	var handled []string
	consume(t, ctx, b, bus.ConsumerProvisioner, func(_ context.Context, d bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, d.Msg.(*events.RunTeardown).RunID)
		return nil
	})

	// A malformed message straight on the command subject, as a broken
	// client would send it: right headers, body missing required fields.
	bad := nats.NewMsg(bus.Subject(events.TypeRunTeardown))
	bad.Header.Set(bus.HeaderType, string(events.TypeRunTeardown))
	bad.Header.Set(bus.HeaderVersion, "1")
	bad.Data = []byte(`{"experiment_id":"e1","backend":"local"}`)
	_, err := b.JetStream().PublishMsg(ctx, bad)
	require.NoError(t, err)
	// And one with no type header at all.
	_, err = b.JetStream().Publish(ctx, bus.Subject(events.TypeRunProvision), []byte(`garbage`))
	require.NoError(t, err)
	require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: "e1", RunID: "r-good", Backend: "local"}, ""))

	testenv.Eventually(t, 10*time.Second, "valid message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 1
	})
	require.Equal(t, []string{"r-good"}, handled)

	dead := dlq(t, b, 2)
	require.Equal(t, "gf.dlq.gf.cmd.run.teardown", dead[0].Subject())
	require.Contains(t, dead[0].Headers().Get(bus.HeaderDLQReason), "run_id")
	require.Equal(t, `{"experiment_id":"e1","backend":"local"}`, string(dead[0].Data()), "original body kept")
	require.Equal(t, "provisioner", dead[0].Headers().Get(bus.HeaderDLQConsume))
	require.Contains(t, dead[1].Headers().Get(bus.HeaderDLQReason), "missing Gf-Type header")
	for _, m := range dead {
		require.False(t, bus.RetryMayHelp(m.Headers().Get(bus.HeaderDLQReason)), "an undecodable message fails a retry the same way")
	}
}

func TestTransientFailuresRetryThenDeadLetter(t *testing.T) {
	t.Parallel()
	b, reg := newBusWithRegistry(t)
	ctx := t.Context()
	var mu sync.Mutex
	attempts := map[string]int{}
	spec := bus.ConsumerSpec{Durable: "flaky", Types: []events.Type{events.TypeLoadStop}, MaxDeliver: 3,
		Backoff: []time.Duration{10 * time.Millisecond}}
	consume(t, ctx, b, spec, func(_ context.Context, d bus.Delivery) error {
		run := d.Msg.(*events.LoadStop).RunID
		mu.Lock()
		attempts[run]++
		n := attempts[run]
		mu.Unlock()
		switch {
		case run == "recovers" && n < 2:
			return context.DeadlineExceeded
		case run == "never":
			return context.DeadlineExceeded
		case run == "permanent":
			return bus.Permanent(errTest)
		}
		return nil
	})
	for _, r := range []string{"never", "permanent", "recovers"} {
		require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: r}, ""))
	}
	dead := dlq(t, b, 2)
	reasons := map[string]string{}
	for _, m := range dead {
		reasons[m.Headers().Get(bus.HeaderRun)] = m.Headers().Get(bus.HeaderDLQReason)
	}
	require.Contains(t, reasons["never"], "failed 3 deliveries")
	require.Contains(t, reasons["permanent"], "rejected: test failure")
	require.True(t, bus.RetryMayHelp(reasons["never"]), "what kept failing may pass on a retry")
	require.False(t, bus.RetryMayHelp(reasons["permanent"]), "a rejection is final")
	testenv.Eventually(t, 5*time.Second, "recovering message retried", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return attempts["recovers"] == 2
	})
	mu.Lock()
	require.Equal(t, 3, attempts["never"], "exactly MaxDeliver attempts")
	require.Equal(t, 1, attempts["permanent"])
	mu.Unlock()
	for _, reason := range []string{"failed", "rejected"} {
		// Counted once the hook has run, after the dead letter is stored.
		testenv.Eventually(t, 5*time.Second, "one dead letter counted as "+reason, func() bool {
			return testenv.CounterValue(t, reg, "greenflow_bus_messages_dead_lettered_total",
				map[string]string{"consumer": "flaky", "reason": reason}) == 1
		})
	}
}

type testErr struct{}

func (testErr) Error() string { return "test failure" }

var errTest = testErr{}

func TestPublishSetsStandardHeadersAndDeduplicates(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := context.Background()
	m := events.RunTornDown{ExperimentID: "e9", RunID: "e9-r1", TsMs: 1}
	require.NoError(t, b.Publish(ctx, m, "torn-down:e9-r1"))
	require.NoError(t, b.Publish(ctx, m, "torn-down:e9-r1"))
	s, err := b.JetStream().Stream(ctx, bus.StreamLifecycle)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "same Nats-Msg-Id stored once")
	raw, err := s.GetLastMsgForSubject(ctx, bus.Subject(events.TypeRunTornDown))
	require.NoError(t, err)
	require.Equal(t, "run.torn_down", raw.Header.Get(bus.HeaderType))
	require.Equal(t, strconv.Itoa(events.Version(m.MessageType())), raw.Header.Get(bus.HeaderVersion))
	require.Equal(t, "e9", raw.Header.Get(bus.HeaderExperiment))
	require.Equal(t, "e9-r1", raw.Header.Get(bus.HeaderRun))
	require.Equal(t, "test", raw.Header.Get(bus.HeaderProducer))
	require.Equal(t, "torn-down:e9-r1", raw.Header.Get(nats.MsgIdHdr))
}

// TestWorkersKeepOneRunInOrderAndDoNotBlockOthers: with the provisioner's
// consumer (Workers > 1), a slow message of one run does not hold up another
// run's, and each run's messages are handled in publication order.
func TestWorkersKeepOneRunInOrderAndDoNotBlockOthers(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := t.Context()
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	consumer := consume(t, ctx, b, bus.ConsumerProvisioner, func(_ context.Context, d bus.Delivery) error {
		var id string
		switch m := d.Msg.(type) {
		case *events.RunProvision:
			id = "provision:" + m.RunID
			if m.RunID == "slow-r0001" {
				<-release // a provision waiting for readiness
			}
		case *events.RunTeardown:
			id = "teardown:" + m.RunID
		}
		mu.Lock()
		order = append(order, id)
		mu.Unlock()
		return nil
	})
	kafka := events.Kafka{Brokers: []string{"k:9092"}, InputTopic: "i", OutputTopic: "o", Partitions: 1}
	prov := func(run string) events.RunProvision {
		return events.RunProvision{ExperimentID: "e", RunID: run, SUT: events.SUT{Template: "uc3-go", Backend: "local"}, Kafka: kafka}
	}
	require.NoError(t, b.Publish(ctx, prov("slow-r0001"), "p1"))
	require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: "e", RunID: "slow-r0001", Backend: "local"}, "t1"))
	require.NoError(t, b.Publish(ctx, prov("fast-r0002"), "p2"))
	require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: "e", RunID: "fast-r0002", Backend: "local"}, "t2"))

	snapshot := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string{}, order...)
	}
	testenv.Eventually(t, 10*time.Second, "the other run handled while the slow one waits", func() bool { return len(snapshot()) == 2 })
	require.Equal(t, []string{"provision:fast-r0002", "teardown:fast-r0002"}, snapshot())
	close(release)
	testenv.Eventually(t, 10*time.Second, "the slow run handled", func() bool { return len(snapshot()) == 4 })
	require.Equal(t, []string{"provision:slow-r0001", "teardown:slow-r0001"}, snapshot()[2:], "one run's messages stay in order")
	require.NoError(t, consumer.Stop(10*time.Second, "the consumer"))
}

// A consumer told about what it dead-letters can answer the sender: the hook
// gets the message's headers and the reason, for undecodable messages too.
func TestOnDeadLetterIsToldWhatWasDeadLettered(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := t.Context()
	type told struct{ typ, run, reason string }
	got := make(chan told, 4)
	spec := bus.ConsumerSpec{Durable: "hooked", Types: []events.Type{events.TypeLoadStart}, MaxDeliver: 2, Backoff: []time.Duration{10 * time.Millisecond}}
	consume(t, ctx, b, spec, func(context.Context, bus.Delivery) error { return bus.Permanent(errTest) },
		bus.OnDeadLetter(func(_ context.Context, h nats.Header, reason string) {
			got <- told{h.Get(bus.HeaderType), h.Get(bus.HeaderRun), reason}
		}))
	// A body that fails its schema: dead-lettered before any handler runs.
	msg := nats.NewMsg(bus.Subject(events.TypeLoadStart))
	msg.Data = []byte(`{"experiment_id":"e1","run_id":"e1-r1"}`)
	msg.Header.Set(bus.HeaderType, string(events.TypeLoadStart))
	msg.Header.Set(bus.HeaderVersion, "1")
	msg.Header.Set(bus.HeaderRun, "e1-r1")
	_, err := b.JetStream().PublishMsg(ctx, msg)
	require.NoError(t, err)
	g := testenv.Receive(t, got, 10*time.Second, "dead-letter hook told of an undecodable message")
	require.Equal(t, "load.start", g.typ)
	require.Equal(t, "e1-r1", g.run)
	require.Contains(t, g.reason, "undecodable")
	// A valid one the handler rejects as permanent.
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e1", RunID: "e1-r2"}, ""))
	require.NoError(t, b.Publish(ctx, events.LoadStart{ExperimentID: "e1", RunID: "e1-r2", DurationMs: 1000,
		Workload: events.Workload{Sensors: 1, PeriodMs: 1000, RatePerSec: 1, Format: "avro"},
		Kafka:    events.Kafka{Brokers: []string{"127.0.0.1:1"}, InputTopic: "i", OutputTopic: "o", Partitions: 1}}, ""))
	g = testenv.Receive(t, got, 10*time.Second, "dead-letter hook told of a rejected message")
	require.Equal(t, "e1-r2", g.run)
	require.Contains(t, g.reason, "rejected")
}

// A handler that is not ready yet (NotYet) gets the message back after the
// backoff, like a failure, and then handles it.
func TestNotYetRetriesTheMessage(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	ctx := t.Context()
	var mu sync.Mutex
	deliveries := 0
	handled := make(chan struct{})
	spec := bus.ConsumerSpec{Durable: "waiting", Types: []events.Type{events.TypeLoadStop}, MaxDeliver: 5, Backoff: []time.Duration{20 * time.Millisecond}}
	consume(t, ctx, b, spec, func(context.Context, bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		deliveries++
		if deliveries < 3 {
			return bus.NotYet(errTest)
		}
		close(handled)
		return nil
	})
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e1", RunID: "e1-r1"}, ""))
	testenv.Receive(t, handled, 10*time.Second, "a message the handler was not ready for, back")
	require.False(t, bus.IsPermanent(bus.NotYet(errTest)))
}

// A handler that runs longer than its ack wait keeps its message, and so
// does a message queued behind it (same run, so same worker) meanwhile: the
// bus extends their deadlines, so each is delivered exactly once. The long
// handler returns only after the bus has extended its deadline six times (a
// third of the ack wait apart: twice the ack wait), and the server's own
// count of deliveries says nothing was redelivered.
func TestALongHandlerKeepsItsMessage(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 2} {
		t.Run(map[int]string{1: "one_worker", 2: "queued_behind_it"}[workers], func(t *testing.T) {
			b, reg := newBusWithRegistry(t)
			ctx := t.Context()
			spec := bus.ConsumerSpec{Durable: "slow", Types: []events.Type{events.TypeRunTeardown}, AckWait: 300 * time.Millisecond, Workers: workers}
			release := make(chan struct{})
			var mu sync.Mutex
			deliveries := map[string][]uint64{}
			consumer := consume(t, ctx, b, spec, func(ctx context.Context, d bus.Delivery) error {
				m := d.Msg.(*events.RunTeardown)
				mu.Lock()
				deliveries[m.ExperimentID] = append(deliveries[m.ExperimentID], d.NumDelivered)
				mu.Unlock()
				if m.ExperimentID == "long" {
					select { // the work itself, as long as the test wants
					case <-release:
					case <-ctx.Done():
					}
				}
				return nil
			})
			published := 1
			require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: "long", RunID: "r1", Backend: "local"}, "m1"))
			if workers > 1 {
				published++
				require.NoError(t, b.Publish(ctx, events.RunTeardown{ExperimentID: "queued", RunID: "r1", Backend: "local"}, "m2"))
			}
			extensions := func() float64 {
				return testenv.CounterValue(t, reg, "greenflow_bus_ack_deadline_extensions_total", map[string]string{"consumer": "slow"})
			}
			testenv.Eventually(t, 10*time.Second, "six deadline extensions per held message", func() bool {
				return extensions() >= float64(6*published)
			})
			close(release)
			cons, err := b.JetStream().Consumer(ctx, bus.StreamLifecycle, "slow")
			require.NoError(t, err)
			var info *jetstream.ConsumerInfo
			testenv.Eventually(t, 10*time.Second, "every message acked", func() bool {
				info, err = cons.Info(ctx)
				require.NoError(t, err)
				return info.AckFloor.Consumer == uint64(published) && info.NumAckPending == 0
			})
			require.Equal(t, uint64(published), info.Delivered.Consumer, "the server delivered each message once")
			require.Zero(t, info.NumRedelivered)
			mu.Lock()
			want := map[string][]uint64{"long": {1}}
			if workers > 1 {
				want["queued"] = []uint64{1}
			}
			require.Equal(t, want, deliveries, "each handled once, on its first delivery")
			mu.Unlock()
			require.NoError(t, consumer.Stop(10*time.Second, "the consumer"))
		})
	}
}

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
			require.False(t, bus.RetryMayHelp(dead[0].Headers().Get(bus.HeaderDLQReason)), "a panic would happen again")
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
