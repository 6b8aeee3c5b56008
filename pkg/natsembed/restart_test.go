package natsembed_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// With authentication on, no service may declare what a NATS server
// restarted with an empty store has lost: the declarer (admin, as
// `greenflow nats declare --keep` or the dev stack runs it) declares every
// stream and bucket again, and the services, which only look them up,
// resume — a consumer gets the messages published after the restart, and
// a bucket takes writes again. Without the declarer the services would
// wait for ever (they are refused any create).
func TestDeclarerRestoresTheTopologyAfterAnEmptyRestart(t *testing.T) {
	srv, s := testenv.NewRestartableNATSWithAuth(t)
	s.Declare(t)
	ctx := t.Context()
	sched := s.Bus(t, string(events.ServiceScheduler))
	lg := s.Bus(t, string(events.ServiceLoadGenerator))

	var mu sync.Mutex
	got := map[string]int{}
	has := func(run string) bool { mu.Lock(); defer mu.Unlock(); return got[run] > 0 }
	spec := bus.ConsumersOf(events.ServiceLoadGenerator)[0]
	c := lg.NewConsumer(spec, func(_ context.Context, d bus.Delivery) error {
		if m, ok := d.Msg.(*events.LoadStop); ok {
			mu.Lock()
			got[m.RunID]++
			mu.Unlock()
		}
		return nil
	})
	consumer := testenv.Go(t, ctx, c.Run)
	runs, err := lg.KV(ctx, bus.BucketLoadRuns)
	require.NoError(t, err)
	_, err = runs.Put(ctx, "plan.before", []byte("{}"))
	require.NoError(t, err)
	require.NoError(t, sched.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "before"}, ""))
	testenv.Eventually(t, 10*time.Second, "the message before the restart", func() bool { return has("before") })

	srv.Stop()
	testenv.Eventually(t, 10*time.Second, "not ready during the outage", func() bool { return lg.Check() != nil && sched.Check() != nil })
	srv.StartEmpty()
	back := time.Now()
	testenv.Eventually(t, 30*time.Second, "the services ready again", func() bool {
		return lg.Check() == nil && sched.Check() == nil && c.Check() == nil
	})
	t.Logf("ready %s after the server came back empty", time.Since(back).Round(time.Millisecond))

	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, sched.Publish(pctx, events.LoadStop{ExperimentID: "e", RunID: "after"}, ""))
	testenv.Eventually(t, 20*time.Second, "the message after the restart", func() bool { return has("after") })
	_, err = runs.Put(pctx, "plan.after", []byte("{}"))
	require.NoError(t, err, "the bucket, lost with the store, is back")
	_, err = runs.Get(pctx, "plan.before")
	require.Error(t, err, "the store was empty: the old plan is gone")
	t.Logf("a message published after the restart handled, and the bucket written, %s after the server was back", time.Since(back).Round(time.Millisecond))
	require.NoError(t, consumer.Stop(15*time.Second, "the consumer"))
}

// The scheduler may not update the trigger stream, so it records an armed
// trigger and waits: the declarer follows the records and makes the stream
// capture their subjects, and the scheduler's DeclareStream returns once
// it has. A record whose subject would hand the scheduler what it may not
// read (the server's own, another user's inbox) is not captured.
func TestDeclarerFollowsArmedTriggers(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := t.Context()
	sched := s.Bus(t, string(events.ServiceScheduler))
	kv, err := sched.KV(ctx, bus.BucketScheduler)
	require.NoError(t, err)
	_, err = kv.Put(ctx, bus.TriggerKeyPrefix+"stolen", []byte(`{"name":"stolen","subject":"$KV.greenflow_tokens.>"}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, bus.TriggerKeyPrefix+"on-build", []byte(`{"name":"on-build","subject":"ci.builds.done"}`))
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, sched.DeclareStream(wctx, bus.TriggerStreamConfig([]string{"ci.builds.done"})),
		"the scheduler finds the subject added")

	admin := s.Bus(t, bus.UserAdmin)
	st, err := admin.JetStream().Stream(ctx, bus.StreamTriggers)
	require.NoError(t, err)
	require.Equal(t, []string{"ci.builds.done"}, st.CachedInfo().Config.Subjects, "only the harmless subject is captured")
	_, err = admin.JetStream().Publish(ctx, "ci.builds.done", []byte(`{}`))
	require.NoError(t, err, "a build event lands in the trigger stream")

	// A second trigger: its subject is added beside the first.
	_, err = kv.Put(ctx, bus.TriggerKeyPrefix+"nightly", []byte(`{"name":"nightly","subject":"ci.nightly"}`))
	require.NoError(t, err)
	require.NoError(t, sched.DeclareStream(wctx, bus.TriggerStreamConfig([]string{"ci.builds.done", "ci.nightly"})))
}
