package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

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
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	rep := h.sched.Submit(ctx, scheduler.SubmitRequest{Spec: triggerSpec})
	require.Empty(t, rep.Error)
	require.Equal(t, "on-image", rep.Armed)
	js := jetStream(t, h.url)
	testenv.Eventually(t, 10*time.Second, "trigger stream", func() bool {
		_, err := js.Stream(ctx, scheduler.StreamTriggers)
		return err == nil
	})
	// The CI pipeline publishes its event (JetStream-acknowledged).
	_, err := js.Publish(ctx, "ci.images.built", []byte(`{"build": {"sensors": 30, "tag": "v1.2"}}`))
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "triggered experiment", func() bool { return len(h.experimentIDs("on-image-ev")) == 1 })
	id := h.experimentIDs("on-image-ev")[0]
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(id))
	runs, err := h.store.Runs(ctx, id)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Contains(t, runs[0].Config, `"sensors":30`, "event value bound into the spec")

	// Redelivery: the trigger consumer is recreated from the start of the
	// stream, so the same event is delivered again — and starts nothing new.
	require.NoError(t, js.DeleteConsumer(ctx, scheduler.StreamTriggers, "scheduler-triggers"))
	h.stopScheduler()
	h.startScheduler(ctx, nil)
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

// TestCronTriggerFiresOncePerSlot drives the scheduler's clock (its time
// and its tick) by hand.
func TestCronTriggerFiresOncePerSlot(t *testing.T) {
	t.Parallel()
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 2, 58, 30, 0, time.UTC))
	h, _ := newHarness(t, nil, func(h *harness) { h.clock = clock })
	ctx := context.Background()
	cronSpec := strings.Replace(strings.Split(triggerSpec, "  trigger:")[0], "on-image", "nightly", 1) + "  trigger: {cron: '0 3 * * *'}\n"
	rep := h.sched.Submit(ctx, scheduler.SubmitRequest{Spec: cronSpec})
	require.Empty(t, rep.Error, fmt.Sprint(rep.Problems))
	js := jetStream(t, h.url)
	testenv.Eventually(t, 5*time.Second, "template armed", func() bool {
		kv, err := js.KeyValue(ctx, scheduler.Bucket)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, "trigger.nightly")
		return err == nil
	})
	// Not yet due.
	ticksUntil(t, clock, time.Date(2026, 11, 25, 2, 59, 50, 0, time.UTC), "the ticks before the slot", func() bool { return true })
	require.Empty(t, h.experimentIDs("nightly-"))
	ticksUntil(t, clock, time.Date(2026, 11, 25, 3, 0, 5, 0, time.UTC), "03:00 slot fired", func() bool { return len(h.experimentIDs("nightly-")) == 1 })
	require.Equal(t, []string{"nightly-20261125-0300"}, h.experimentIDs("nightly-"))
	// Later ticks in the same slot fire nothing more; the next day's does.
	ticksUntil(t, clock, time.Date(2026, 11, 25, 3, 30, 0, 0, time.UTC), "ticks later in the slot", func() bool { return true })
	ticksUntil(t, clock, time.Date(2026, 11, 26, 3, 0, 1, 0, time.UTC), "next slot fired", func() bool { return len(h.experimentIDs("nightly-")) == 2 })
	require.Equal(t, []string{"nightly-20261125-0300", "nightly-20261126-0300"}, h.experimentIDs("nightly-"))
}

// ticksUntil sets the clock to from, then moves it on by one tick
// interval at every poll — at least three, so the scheduler's tick fires
// at that time — until cond holds.
func ticksUntil(t testing.TB, clock *clocktesting.FakeClock, from time.Time, what string, cond func() bool) {
	t.Helper()
	clock.SetTime(from)
	polls := 0
	testenv.Eventually(t, 10*time.Second, what, func() bool {
		polls++
		clock.Step(testConfig(nil).Tick)
		return polls > 2 && cond()
	})
}

// A template armed, before subjects were checked, on one the trigger stream
// cannot capture (">" overlaps every stream; a trial's "$KV…" one stopped the
// scheduler a minute after each start) is left out of the stream: the
// scheduler runs on, and the other triggers fire.
func TestATriggerArmedOnAnUncapturableSubjectStopsNothing(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	h.stopScheduler()
	old, err := testenv.Bus(t, h.url, "older-version").KV(ctx, bus.BucketScheduler)
	require.NoError(t, err)
	rec, err := json.Marshal(scheduler.TriggerRecord{Name: "everything", Template: "x", Subject: ">", CreatedMs: 1})
	require.NoError(t, err)
	_, err = old.Put(ctx, bus.TriggerKeyPrefix+"everything", rec)
	require.NoError(t, err)
	h.startScheduler(ctx, nil)

	rep := h.sched.Submit(ctx, scheduler.SubmitRequest{Spec: triggerSpec})
	require.Empty(t, rep.Error)
	js := jetStream(t, h.url)
	testenv.Eventually(t, 10*time.Second, "trigger stream", func() bool {
		st, err := js.Stream(ctx, scheduler.StreamTriggers)
		return err == nil && slices.Equal(st.CachedInfo().Config.Subjects, []string{"ci.images.built"})
	})
	_, err = js.Publish(ctx, "ci.images.built", []byte(`{"build": {"sensors": 30}}`))
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "triggered experiment", func() bool { return len(h.experimentIDs("on-image-ev")) == 1 })
}
