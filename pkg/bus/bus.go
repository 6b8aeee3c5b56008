// Package bus is GreenFlow's NATS JetStream layer. It declares, in one place,
// the subjects, streams and durable consumers every service uses; it stamps
// every message with the standard headers (type, version, Nats-Msg-Id,
// experiment, run, producer); and it gives every consumer the same failure
// policy: a message that fails is Nak'ed with backoff, and after MaxDeliver
// attempts — or at once, when it cannot be decoded or the handler says the
// failure is permanent — it is copied to the dead-letter stream with the
// reason, then terminated, so it never blocks the stream and never vanishes.
// A handler that panics costs its message (dead-lettered with the panic),
// never the consumer.
//
// The bus counts deliveries, not the server: durable consumers redeliver
// without limit, and a delivery beyond MaxDeliver is dead-lettered before
// its handler runs ("out of deliveries", with the consumer's dead-letter
// hook), whatever spent the earlier ones — failures, processes that died
// or shut down holding the message (a Nak at shutdown spends a delivery
// too: JetStream counts every one). A server that gave up by itself would
// stop delivering such a message without telling anyone. The dead letters
// are counted by consumer and reason in
// greenflow_bus_messages_dead_lettered_total.
//
// The bus also keeps what it declared alive across NATS restarts: after a
// reconnect it declares its streams and key-value buckets again (a server
// restarted with an empty store has none), every consumer re-declares its
// durable consumer when the server says it is gone, and Check reports what
// is not working meanwhile, for /healthz.
//
// Where things are: topology.go (subjects, headers, streams, declaring them
// again after a reconnect), consumers.go (every service's durable consumers,
// checked against the events registry), publish.go, consume.go (a durable
// consumer's life: declare, pull, probe, declare again) with workers.go
// (per-run ordered workers), handler.go (what a handler gets and returns),
// handle.go (the failure policy for one message), deadletter.go,
// recover.go (panics), health.go (Check, Expect), watch.go, kv.go.
package bus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Bus is a connection to NATS with JetStream; safe for concurrent use.
type Bus struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	producer string
	logger   *zap.Logger
	m        *metrics
	secured  bool    // the connection authenticates: declare only what producer owns
	sig      *signer // signs what it produces, checks what it reads; nil unauthenticated (sign.go)

	mu        sync.Mutex
	streams   map[string]jetstream.StreamConfig // declared through the bus, by name
	buckets   map[string]*bucket
	consumers map[*Consumer]struct{}
	expected  map[string]bool           // durable name patterns → a consumer of it has consumed
	topology  state                     // streams and buckets after a reconnect
	pending   map[*pendingCall]struct{} // calls a permission violation ends (refused.go)
	stop      chan struct{}
	stopOnce  sync.Once
}

type metrics struct {
	published    *prometheus.CounterVec
	consumed     *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	panics       *prometheus.CounterVec
	redeclared   *prometheus.CounterVec
	extended     *prometheus.CounterVec
	asyncErrors  *prometheus.CounterVec
	unverified   *prometheus.CounterVec
}

// newMetrics builds the bus's metrics, registered on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_published_total",
			Help: "Messages published, by type."}, []string{"type"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_consumed_total",
			Help: "Messages handled, by consumer, type and outcome (ack, nak, wait: not ready yet, interrupted: Nak'ed by a consumer shutting down, duplicate: a copy of a message it had settled, acknowledged again, dead_letter)."}, []string{"consumer", "type", "outcome"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_dead_lettered_total",
			Help: "Messages moved to the dead-letter stream, by consumer and reason (panic, unverified, undecodable, rejected, failed: MaxDeliver failed attempts, out_of_deliveries: MaxDeliver deliveries spent without an outcome, e.g. by processes that died handling it)."}, []string{"consumer", "reason"}),
		redeclared: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_consumers_redeclared_total",
			Help: "Durable consumers declared again after the server lost them (a restart with an empty store, a deleted consumer), by consumer."}, []string{"consumer"}),
		extended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_ack_deadline_extensions_total",
			Help: "Ack deadlines extended for messages held longer than a third of the ack wait (handled, or queued for a busy worker), by consumer."}, []string{"consumer"}),
		asyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_nats_errors_total",
			Help: "Errors the NATS server reported asynchronously, by kind (permission: a subject this user may not use; slow_consumer; authorization; other)."}, []string{"kind"}),
		unverified: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_unverified_total",
			Help: "Messages (event: dead-lettered; watch: skipped) and key-value records (kv: skipped) whose signature did not prove a producer the contract allows, by kind."}, []string{"kind"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_handler_panics_total",
			Help: "Handler panics recovered, by consumer (durable name or request subject); the message was dead-lettered or answered with an error."}, []string{"consumer"}),
	}
	if err := service.Register(reg, "bus", m.published, m.consumed, m.deadLettered, m.panics, m.redeclared, m.extended, m.asyncErrors, m.unverified); err != nil {
		return nil, err
	}
	return m, nil
}

// Connect dials NATS at url, and declares the streams. producer names this
// service in message headers. reg may be nil. opts add to the connection's
// options: Credentials.Options, above all.
func Connect(ctx context.Context, url, producer string, logger *zap.Logger, reg prometheus.Registerer, opts ...nats.Option) (*Bus, error) {
	opts = append([]nats.Option{nats.Name(producer), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	b, err := New(ctx, nc, producer, logger, reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// New wraps an existing connection (which the caller keeps owning). It
// sets the connection's async error handler: the bus logs and counts them.
func New(ctx context.Context, nc *nats.Conn, producer string, logger *zap.Logger, reg prometheus.Registerer) (*Bus, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	sig, err := newSigner(nc)
	if err != nil {
		return nil, err
	}
	b := &Bus{nc: nc, js: js, sig: sig, producer: producer, logger: logger.With(zap.String("component", "bus")), m: m,
		streams: map[string]jetstream.StreamConfig{}, buckets: map[string]*bucket{}, consumers: map[*Consumer]struct{}{},
		expected: map[string]bool{}, pending: map[*pendingCall]struct{}{}, stop: make(chan struct{})}
	// Under authentication a user may create and update only the streams
	// and buckets it owns (access.go); the bus then looks the others up.
	b.secured = nc.Opts.Nkey != "" || nc.Opts.User != "" || nc.Opts.Token != "" || nc.Opts.UserJWT != nil
	nc.SetErrorHandler(b.asyncError)
	for _, cfg := range []jetstream.StreamConfig{lifecycleStream, deadLetterStream, collectorStream, watchStream} {
		if err := b.DeclareStream(ctx, cfg); err != nil {
			return nil, err
		}
	}
	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	go b.keepTopology(status)
	return b, nil
}

// Close closes the NATS connection.
func (b *Bus) Close() {
	b.stopOnce.Do(func() { close(b.stop) })
	b.nc.Close()
}

// Conn is the underlying NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the underlying JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }
