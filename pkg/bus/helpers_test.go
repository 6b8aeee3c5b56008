package bus_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// newBus connects a bus to an embedded NATS server of the test's own.
func newBus(t testing.TB) *bus.Bus {
	t.Helper()
	b, _ := newBusWithRegistry(t)
	return b
}

// newBusWithRegistry is newBus with the registry its metrics go to.
func newBusWithRegistry(t testing.TB) (*bus.Bus, *prometheus.Registry) {
	t.Helper()
	return newBusAt(t, testenv.NATS(t))
}

// newBusAt connects a bus to the NATS server at url; it is closed when
// the test ends.
func newBusAt(t testing.TB, url string) (*bus.Bus, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, url, "test", testenv.Logger(t), reg)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b, reg
}

// restartNATS stops srv, waits until b — and every check in down — says
// it is not ready, starts srv again (with an empty store when empty) and
// waits until b is ready; it returns when srv was started again.
func restartNATS(t testing.TB, srv *testenv.RestartableNATS, b *bus.Bus, empty bool, down ...func() error) (back time.Time) {
	t.Helper()
	srv.Stop()
	testenv.Eventually(t, 10*time.Second, "not ready during the outage", func() bool {
		for _, check := range append([]func() error{b.Check}, down...) {
			if check() == nil {
				return false
			}
		}
		return true
	})
	t.Logf("during the outage: %v", b.Check())
	if empty {
		srv.StartEmpty()
	} else {
		srv.Start()
	}
	back = time.Now()
	testenv.Eventually(t, 30*time.Second, "ready after the restart", func() bool { return b.Check() == nil })
	t.Logf("ready %s after the server was back", time.Since(back).Round(time.Millisecond))
	return back
}

// consume runs b.Consume until the test stops it or ends.
func consume(t testing.TB, ctx context.Context, b *bus.Bus, spec bus.ConsumerSpec, h bus.Handler, opts ...bus.ConsumeOption) *testenv.Running {
	t.Helper()
	return testenv.Go(t, ctx, func(ctx context.Context) error { return b.Consume(ctx, spec, h, opts...) })
}

// dlq reads every dead-lettered message so far.
func dlq(t testing.TB, b *bus.Bus, want int) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := b.JetStream().OrderedConsumer(ctx, bus.StreamDeadLetter, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	var out []jetstream.Msg
	for len(out) < want {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err, "waiting for dead letter %d of %d", len(out)+1, want)
		out = append(out, m)
	}
	return out
}

// receiving declares a consumer of load.stop, durable, that collects the
// run ids it handles.
func receiving(b *bus.Bus, durable string) (*bus.Consumer, *received) {
	got := &received{}
	spec := bus.ConsumerSpec{Durable: durable, Types: []events.Type{events.TypeLoadStop}}
	return b.NewConsumer(spec, func(_ context.Context, d bus.Delivery) error {
		got.add(d.Msg.(*events.LoadStop).RunID)
		return nil
	}), got
}

// received collects the run ids a consumer handled.
type received struct {
	mu   sync.Mutex
	runs []string
}

func (r *received) add(run string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, run)
}

func (r *received) has(run string) bool { return r.count(run) > 0 }

func (r *received) count(run string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(slices.DeleteFunc(slices.Clone(r.runs), func(x string) bool { return x != run }))
}
