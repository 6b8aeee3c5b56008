package bus_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// dyingSpec is the load generator's consumer, as the service runs it on a
// secured server, with few deliveries and a short ack wait so that a dead
// process's message comes back soon.
func dyingSpec() bus.ConsumerSpec {
	spec := bus.ConsumerLoadGenerator
	spec.MaxDeliver = 3
	spec.AckWait = time.Second
	spec.Backoff = []time.Duration{10 * time.Millisecond}
	return spec
}

// deaths counts what the processes of one consumer did across restarts:
// the deliveries their handler began and the dead letters their hook was
// told about.
type deaths struct {
	mu      sync.Mutex
	handled []uint64 // NumDelivered of each handler call
	hooked  []string // reasons the dead-letter hook was given
}

func (d *deaths) handledCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.handled)
}

func (d *deaths) hooks() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.hooked...)
}

// process is one start of the load generator's process: its own
// connection (as the service user, signing and verifying as the services
// do) and its consumer, whose handler tells started about each delivery it
// begins and then hangs until the process is killed.
type process struct {
	b       *bus.Bus
	reg     *prometheus.Registry
	run     *testenv.Running
	started chan uint64
}

func startProcess(t *testing.T, s testenv.SecureNATS, spec bus.ConsumerSpec, d *deaths) *process {
	t.Helper()
	co, err := s.Creds(string(events.ServiceLoadGenerator)).Options()
	require.NoError(t, err)
	p := &process{reg: prometheus.NewRegistry(), started: make(chan uint64, 16)}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p.b, err = bus.Connect(ctx, s.URL, string(events.ServiceLoadGenerator), testenv.Logger(t), p.reg, co...)
	require.NoError(t, err)
	t.Cleanup(p.b.Close)
	p.run = testenv.Go(t, t.Context(), func(ctx context.Context) error {
		return p.b.Consume(ctx, spec, func(ctx context.Context, dl bus.Delivery) error {
			d.mu.Lock()
			d.handled = append(d.handled, dl.NumDelivered)
			d.mu.Unlock()
			p.started <- dl.NumDelivered
			<-ctx.Done() // hangs until the process goes
			return ctx.Err()
		}, bus.OnDeadLetter(func(_ context.Context, _ nats.Header, reason string) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.hooked = append(d.hooked, reason)
		}))
	})
	return p
}

// kill ends the process as a crash does: its connection goes first, so
// nothing it does afterwards (an ack, a nak, a dead letter) reaches the
// server.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.b.Close()
	require.NoError(t, p.run.Stop(30*time.Second, "the killed process's consumer"))
}

// publishLoadStart publishes a load.start for run as the scheduler does.
func publishLoadStart(t *testing.T, s testenv.SecureNATS, run string) {
	t.Helper()
	sched := s.Bus(t, string(events.ServiceScheduler))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, sched.Publish(ctx, events.LoadStart{ExperimentID: "e-dying", RunID: run, DurationMs: 1000}, ""))
}

// requireDeadLetteredOnce waits for run's message in the dead-letter
// stream (read by admin) and returns it, then checks that the consumer
// holds nothing more of it, that the hook was told exactly once and that
// the process counted it as out of deliveries.
func requireDeadLetteredOnce(t *testing.T, s testenv.SecureNATS, p *process, spec bus.ConsumerSpec, d *deaths) jetstream.Msg {
	t.Helper()
	admin := s.Bus(t, bus.UserAdmin)
	ctx := t.Context()
	cons, err := admin.JetStream().Consumer(ctx, bus.StreamLifecycle, spec.Durable)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	t.Logf("consumer %s now: max_deliver %d, ack pending %d, redelivered %d, pending %d, ack floor %d",
		spec.Durable, info.Config.MaxDeliver, info.NumAckPending, info.NumRedelivered, info.NumPending, info.AckFloor.Stream)
	dead := dlq(t, admin, 1)[0]
	require.Equal(t, bus.Subject(events.TypeLoadStart), dead.Headers().Get(bus.HeaderDLQSubject))
	testenv.Eventually(t, 10*time.Second, "the dead-lettered message settled (terminated, nothing pending)", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	})
	testenv.Eventually(t, 10*time.Second, "the dead-letter hook called", func() bool { return len(d.hooks()) > 0 })
	require.Equal(t, []string{dead.Headers().Get(bus.HeaderDLQReason)}, d.hooks(), "the hook is told once, with the dead letter's reason")
	// Counted once the hook has returned.
	testenv.Eventually(t, 5*time.Second, "the dead letter counted as out of deliveries", func() bool {
		return testenv.CounterValue(t, p.reg, "greenflow_bus_messages_dead_lettered_total",
			map[string]string{"consumer": spec.Durable, "reason": "out_of_deliveries"}) == 1
	})
	return dead
}

// A message whose every delivery ends with its process dying mid-handler
// (no ack, no nak, no outcome) is dead-lettered — with a reason saying so,
// the consumer's hook told once — by the process started after the last
// delivery, which does not run the handler again. Before, the server
// stopped delivering it after MaxDeliver and it vanished: never handled,
// never dead-lettered, nobody answered.
func TestDeliveriesSpentByDyingProcessesAreDeadLettered(t *testing.T) {
	t.Parallel()
	s := testenv.NATSWithAuth(t)
	spec := dyingSpec()
	d := &deaths{}
	publishLoadStart(t, s, "r-dying")
	for i := 1; i <= spec.MaxDeliver; i++ {
		p := startProcess(t, s, spec, d)
		n := testenv.Receive(t, p.started, 20*time.Second, "delivery "+strconv.Itoa(i))
		require.Equal(t, uint64(i), n, "the handler began delivery %d", i)
		p.kill(t)
	}
	last := startProcess(t, s, spec, d)
	dead := requireDeadLetteredOnce(t, s, last, spec, d)
	reason := dead.Headers().Get(bus.HeaderDLQReason)
	require.Contains(t, reason, "out of deliveries")
	require.Contains(t, reason, "3 deliveries (at most 3) spent")
	require.Contains(t, reason, "dead-lettered at delivery 4", "the reason's count agrees with the delivery header")
	require.True(t, bus.RetryMayHelp(reason), "processes that died holding it: a retry of the work may get past that")
	require.Equal(t, "4", dead.Headers().Get(bus.HeaderDLQDeliver))
	require.Equal(t, spec.MaxDeliver, d.handledCount(), "the handler ran once per delivery within MaxDeliver, not after")
}

// A durable consumer left by an older version, which let the server give
// up after MaxDeliver, is updated in place when the consumer starts — with
// a message already in flight — and that message is still dead-lettered
// after the deliveries it had left.
func TestAnOldDurableConsumerIsMigratedInPlace(t *testing.T) {
	t.Parallel()
	s := testenv.NATSWithAuth(t)
	spec := dyingSpec()
	d := &deaths{}
	ctx := t.Context()
	// The old version's durable, as it declared it, as the service's user.
	lg := s.Bus(t, string(events.ServiceLoadGenerator))
	var filters []string
	for _, typ := range spec.Types {
		filters = append(filters, bus.Subject(typ))
	}
	old, err := lg.JetStream().CreateConsumer(ctx, bus.StreamLifecycle, jetstream.ConsumerConfig{
		Durable: spec.Durable, FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: spec.AckWait, MaxDeliver: spec.MaxDeliver, DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1000})
	require.NoError(t, err)
	publishLoadStart(t, s, "r-migrated")
	// The old version's process takes the first delivery and dies.
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	var first jetstream.Msg
	for m := range batch.Messages() {
		first = m
	}
	require.NoError(t, batch.Error())
	require.NotNil(t, first, "the old version's process got the message")
	lg.Close()

	for i := 2; i <= spec.MaxDeliver; i++ {
		p := startProcess(t, s, spec, d)
		n := testenv.Receive(t, p.started, 20*time.Second, "delivery "+strconv.Itoa(i))
		require.Equal(t, uint64(i), n)
		if i == 2 {
			cons, err := p.b.JetStream().Consumer(ctx, bus.StreamLifecycle, spec.Durable)
			require.NoError(t, err)
			info := cons.CachedInfo()
			require.Equal(t, -1, info.Config.MaxDeliver, "the durable consumer was updated in place: the server no longer gives up")
			require.Equal(t, spec.AckWait, info.Config.AckWait)
		}
		p.kill(t)
	}
	last := startProcess(t, s, spec, d)
	dead := requireDeadLetteredOnce(t, s, last, spec, d)
	require.Contains(t, dead.Headers().Get(bus.HeaderDLQReason), "out of deliveries")
	require.Equal(t, spec.MaxDeliver-1, d.handledCount())
}

// A message left in the consumer's pull buffer behind a long handler (not
// yet held, so its ack wait runs out) is delivered again into the same
// buffer, past MaxDeliver. It is handled once: the later copies are
// acknowledged again, neither handled a second time nor dead-lettered as
// out of deliveries.
func TestAStaleCopyIsNeitherHandledAgainNorDeadLettered(t *testing.T) {
	t.Parallel()
	b, reg := newBusWithRegistry(t)
	ctx := t.Context()
	spec := bus.ConsumerSpec{Durable: "stale", Types: []events.Type{events.TypeLoadStop}, MaxDeliver: 2, AckWait: 500 * time.Millisecond}
	release := testenv.NewGate()
	var mu sync.Mutex
	handled := map[string]int{}
	c := b.NewConsumer(spec, func(ctx context.Context, d bus.Delivery) error {
		run := d.Msg.(*events.LoadStop).RunID
		mu.Lock()
		handled[run]++
		mu.Unlock()
		if run == "long" {
			return release.Wait(ctx)
		}
		return nil
	})
	testenv.Go(t, ctx, c.Run)
	testenv.Eventually(t, 10*time.Second, "consumer ready", func() bool { return c.Check() == nil })
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "long"}, ""))
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "behind"}, ""))
	cons, err := b.JetStream().Consumer(ctx, bus.StreamLifecycle, spec.Durable)
	require.NoError(t, err)
	// "long" is delivered once (its deadline is extended); "behind" is
	// delivered again each ack wait, beyond MaxDeliver.
	testenv.Eventually(t, 20*time.Second, "the waiting message delivered MaxDeliver+1 times", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.Delivered.Consumer >= uint64(1+spec.MaxDeliver+1)
	})
	release.Open()
	testenv.Eventually(t, 20*time.Second, "every copy settled", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	mu.Lock()
	require.Equal(t, map[string]int{"long": 1, "behind": 1}, handled, "each handled once")
	mu.Unlock()
	require.Zero(t, testenv.CounterValue(t, reg, "greenflow_bus_messages_dead_lettered_total", map[string]string{"consumer": spec.Durable}))
	st, err := b.JetStream().Stream(ctx, bus.StreamDeadLetter)
	require.NoError(t, err)
	sinfo, err := st.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, sinfo.State.Msgs, "nothing dead-lettered")
	// The server delivered "behind" at least MaxDeliver+1 times, "long"
	// once: all but two deliveries were copies.
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "every copy acknowledged as a duplicate", func() bool {
		return testenv.CounterValue(t, reg, "greenflow_bus_messages_consumed_total",
			map[string]string{"consumer": spec.Durable, "outcome": "duplicate"}) >= float64(info.Delivered.Consumer-2)
	})
}
