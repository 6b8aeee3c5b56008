package scheduler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

func (h *harness) experimentIDs(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id := range h.experiments {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

const triggerSpec = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: on-image}
spec:
  workload: {sensors: 10, periodMs: 1000, format: avro}
  phases: {baseline: 10ms, warmup: 10ms, measure: 50ms, cooldown: 10ms}
  trigger:
    subject: ci.images.built
    bind: {spec.workload.sensors: build.sensors}
`

func TestSubjectTriggerStartsOneExperimentPerEventEvenWhenRedelivered(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	rep := h.sched.Submit(ctx, scheduler.SubmitRequest{Spec: triggerSpec})
	require.Empty(t, rep.Error)
	require.Equal(t, "on-image", rep.Armed)
	nc := testenv.NATSConn(t, h.url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "trigger stream", func() bool {
		_, err := js.Stream(ctx, scheduler.StreamTriggers)
		return err == nil
	})
	// The CI pipeline publishes its event (JetStream-acknowledged).
	_, err = js.Publish(ctx, "ci.images.built", []byte(`{"build": {"sensors": 30, "tag": "v1.2"}}`))
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "triggered experiment", func() bool { return len(h.experimentIDs("on-image-ev")) == 1 })
	id := h.experimentIDs("on-image-ev")[0]
	require.Equal(t, "done", h.waitFinal(id))
	runs, err := h.store.Runs(ctx, id)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Contains(t, runs[0].Config, `"sensors":30`, "event value bound into the spec")

	// Redelivery: the trigger consumer is recreated from the start of the
	// stream, so the same event is delivered again — and starts nothing new.
	require.NoError(t, js.DeleteConsumer(ctx, scheduler.StreamTriggers, "scheduler-triggers"))
	cancel()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	h.startScheduler(ctx2, nil)
	testenv.Eventually(t, 10*time.Second, "event redelivered and acknowledged", func() bool {
		c, err := js.Consumer(ctx, scheduler.StreamTriggers, "scheduler-triggers")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream == 1
	})
	runs, err = h.store.Runs(ctx, id)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, []string{id}, h.experimentIDs("on-image-ev"))

	// An event without the bound field goes to the dead-letter stream.
	_, err = js.Publish(ctx, "ci.images.built", []byte(`{"build": {}}`))
	require.NoError(t, err)
	dl, err := js.OrderedConsumer(ctx, bus.StreamDeadLetter, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	msg, err := dl.Next(jetstream.FetchMaxWait(10 * time.Second))
	require.NoError(t, err)
	require.Contains(t, msg.Headers().Get(bus.HeaderDLQReason), `has no field "build.sensors"`)
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func TestCronTriggerFiresOncePerSlot(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 25, 2, 58, 30, 0, time.UTC)}
	h, cancel := newHarness(t, nil, func(h *harness) { h.clock = clock })
	defer cancel()
	ctx := context.Background()
	cronSpec := strings.Replace(strings.Split(triggerSpec, "  trigger:")[0], "on-image", "nightly", 1) + "  trigger: {cron: '0 3 * * *'}\n"
	rep := h.sched.Submit(ctx, scheduler.SubmitRequest{Spec: cronSpec})
	require.Empty(t, rep.Error, fmt.Sprint(rep.Problems))
	// Not yet due.
	js, err := jetstream.New(testenv.NATSConn(t, h.url))
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "template armed", func() bool {
		kv, err := js.KeyValue(ctx, scheduler.Bucket)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, "trigger.nightly")
		return err == nil
	})
	require.Empty(t, h.experimentIDs("nightly-"))
	clock.set(time.Date(2026, 11, 25, 3, 0, 5, 0, time.UTC))
	testenv.Eventually(t, 10*time.Second, "03:00 slot fired", func() bool { return len(h.experimentIDs("nightly-")) == 1 })
	require.Equal(t, []string{"nightly-20261125-0300"}, h.experimentIDs("nightly-"))
	// Later ticks in the same slot fire nothing more; the next day's does.
	clock.set(time.Date(2026, 11, 25, 3, 30, 0, 0, time.UTC))
	clock.set(time.Date(2026, 11, 26, 3, 0, 1, 0, time.UTC))
	testenv.Eventually(t, 10*time.Second, "next slot fired", func() bool { return len(h.experimentIDs("nightly-")) == 2 })
	require.Equal(t, []string{"nightly-20261125-0300", "nightly-20261126-0300"}, h.experimentIDs("nightly-"))
}

// TestTriggerConsumerThatCannotStartFailsTheScheduler: arming a subject
// trigger starts the trigger consumer; when it cannot start (here its
// durable exists with a deliver policy that cannot be changed) the
// scheduler's Run must fail with the cause instead of running on with
// triggers that would never fire.
func TestTriggerConsumerThatCannotStartFailsTheScheduler(t *testing.T) {
	url := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.Connect(ctx, url, "scheduler", testenv.Logger(t), nil)
	require.NoError(t, err)
	defer b.Close()
	_, err = b.JetStream().CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: scheduler.StreamTriggers, Subjects: []string{"ci.images.built"}})
	require.NoError(t, err)
	_, err = b.JetStream().CreateConsumer(ctx, scheduler.StreamTriggers, jetstream.ConsumerConfig{Durable: "scheduler-triggers",
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	s, err := scheduler.New(cfg, b, testenv.Store(t), testenv.Logger(t), nil, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "the scheduler to be ready", func() bool { return s.Check() == nil })
	rep := s.Submit(ctx, scheduler.SubmitRequest{Spec: triggerSpec})
	require.Empty(t, rep.Error)
	var runErr error
	testenv.Eventually(t, 15*time.Second, "Run to fail while its context is live", func() bool {
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	})
	require.ErrorContains(t, runErr, "trigger consumer: declare consumer scheduler-triggers")
}

// TestConsumerThatCannotStartFailsTheScheduler: the scheduler's own durable
// consumer exists with a configuration that cannot be changed; Run must
// return the cause at once, not wait for its context to end.
func TestConsumerThatCannotStartFailsTheScheduler(t *testing.T) {
	url := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.Connect(ctx, url, "scheduler", testenv.Logger(t), nil)
	require.NoError(t, err)
	defer b.Close()
	_, err = b.JetStream().CreateConsumer(ctx, bus.StreamLifecycle, jetstream.ConsumerConfig{Durable: bus.ConsumerScheduler.Durable,
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: bus.Subject(events.TypeRunAnalyzed)})
	require.NoError(t, err)
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	s, err := scheduler.New(cfg, b, testenv.Store(t), testenv.Logger(t), nil, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var runErr error
	testenv.Eventually(t, 15*time.Second, "Run to fail while its context is live", func() bool {
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	})
	require.ErrorContains(t, runErr, "declare consumer "+bus.ConsumerScheduler.Durable)
}
