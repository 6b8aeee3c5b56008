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
// The bus also keeps what it declared alive across NATS restarts: after a
// reconnect it declares its streams and key-value buckets again (a server
// restarted with an empty store has none), every consumer re-declares its
// durable consumer when the server says it is gone, and Check reports what
// is not working meanwhile, for /healthz.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// Streams and subject roots.
const (
	StreamLifecycle  = "GF_LIFECYCLE"
	StreamDeadLetter = "GF_DEADLETTER"
	SubjectCommands  = "gf.cmd."
	SubjectEvents    = "gf.evt."
	SubjectDLQ       = "gf.dlq."
)

// Standard headers.
const (
	HeaderType       = "Gf-Type"
	HeaderVersion    = "Gf-Version"
	HeaderExperiment = "Gf-Experiment-Id"
	HeaderRun        = "Gf-Run-Id"
	HeaderProducer   = "Gf-Producer"
	HeaderDLQReason  = "Gf-Dlq-Reason"
	HeaderDLQSubject = "Gf-Dlq-Subject"
	HeaderDLQConsume = "Gf-Dlq-Consumer"
	HeaderDLQDeliver = "Gf-Dlq-Deliveries"
	HeaderDLQStream  = "Gf-Dlq-Stream-Seq"
)

// commands are addressed to one service; everything else is an event.
var commands = map[events.Type]bool{
	events.TypeExperimentSubmit: true, events.TypeExperimentCancel: true,
	events.TypeRunProvision: true, events.TypeRunTeardown: true,
	events.TypeLoadStart: true, events.TypeLoadStop: true,
	events.TypeCollectAssign: true, events.TypeCollectRelease: true,
}

// Subject is where messages of type t are published.
func Subject(t events.Type) string {
	if commands[t] {
		return SubjectCommands + string(t)
	}
	return SubjectEvents + string(t)
}

// ConsumerSpec declares a durable consumer and its failure policy.
type ConsumerSpec struct {
	Durable    string
	Types      []events.Type
	MaxDeliver int
	Backoff    []time.Duration // Nak delay per attempt; the last repeats
	AckWait    time.Duration
	// Workers > 1 handles messages of different runs concurrently; the
	// messages of one run (by Gf-Run-Id) stay on one worker, in order.
	Workers int
}

var defaultBackoff = []time.Duration{200 * time.Millisecond, time.Second, 5 * time.Second}

// defaultAckWait is how long a message handed to a consumer that died
// stays with it before JetStream hands it to another (or to the consumer
// restarted). A handler that runs longer keeps its message: the bus extends
// the deadline every third of it while the handler runs (keepWhileHandled).
const defaultAckWait = 15 * time.Second

// The durable consumers of every service, declared once.
var (
	ConsumerScheduler = ConsumerSpec{Durable: "scheduler", Types: []events.Type{
		events.TypeExperimentSubmit, events.TypeExperimentCancel, events.TypeRunProvisioned, events.TypeRunProvisionFailed,
		events.TypeRunTornDown, events.TypeLoadFinished, events.TypeRunAnalyzed,
	}, AckWait: 10 * time.Second} // handlers are short; a crashed scheduler's messages come back soon
	// The provisioner waits for readiness (minutes on a cluster), so one
	// run's provision must not hold up another run's teardown.
	ConsumerProvisioner   = ConsumerSpec{Durable: "provisioner", Types: []events.Type{events.TypeRunProvision, events.TypeRunTeardown}, Workers: 8}
	ConsumerLoadGenerator = ConsumerSpec{Durable: "load-generator", Types: []events.Type{events.TypeLoadStart, events.TypeLoadStop}}
	// The analyzer Naks a run.measured until the window's last samples are
	// stored (up to its samplesWait, 10 s by default, after the window
	// end): its redeliveries must outlast that wait and leave room for real
	// retries after it (33 s in all).
	ConsumerAnalyzer = ConsumerSpec{Durable: "analyzer", Types: []events.Type{events.TypeRunMeasured}, MaxDeliver: 10,
		Backoff: []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}}
	// ConsumerProvisionerStates lets the provisioner learn which runs have
	// ended (run.state with a final state), so it can make sure nothing of
	// theirs is left behind even when their teardown command was lost.
	ConsumerProvisionerStates = ConsumerSpec{Durable: "provisioner-states", Types: []events.Type{events.TypeRunState}, Workers: 4}
	// ConsumerRecorder stores run time series (load progress) in ClickHouse.
	ConsumerRecorder = ConsumerSpec{Durable: "analyzer-recorder", Types: []events.Type{events.TypeLoadProgress}}
)

// ExpectedConsumers names the durable consumers a service runs (a
// trailing * matches any instance suffix), so that its /healthz waits for
// them even when its component starts them late in Run: svcmain and the
// dev stack pass them to Bus.Expect. A service that starts consuming
// another durable consumer adds it here.
func ExpectedConsumers(service string) []string {
	switch service {
	case "scheduler":
		return []string{ConsumerScheduler.Durable}
	case "provisioner":
		return []string{ConsumerProvisioner.Durable, ConsumerProvisionerStates.Durable}
	case "load-generator":
		return []string{ConsumerLoadGenerator.Durable}
	case "energy-collector":
		return []string{collectorPrefix + "*"}
	case "analyzer":
		return []string{ConsumerAnalyzer.Durable, ConsumerRecorder.Durable}
	}
	return nil
}

const collectorPrefix = "energy-collector-"

// ConsumerCollector is one energy-collector instance's consumer: every
// instance sees every assignment.
func ConsumerCollector(instance string) ConsumerSpec {
	return ConsumerSpec{Durable: collectorPrefix + sanitize(instance), Types: []events.Type{events.TypeCollectAssign, events.TypeCollectRelease}}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func (c ConsumerSpec) withDefaults() ConsumerSpec {
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = defaultBackoff
	}
	if c.AckWait == 0 {
		c.AckWait = defaultAckWait
	}
	return c
}

// Bus is a connection to NATS with JetStream; safe for concurrent use.
type Bus struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	producer string
	logger   *zap.Logger
	m        *metrics

	mu        sync.Mutex
	streams   map[string]jetstream.StreamConfig // declared through the bus, by name
	buckets   map[string]*bucket
	consumers map[*Consumer]struct{}
	expected  map[string]bool // durable name patterns → a consumer of it has consumed
	topology  state           // streams and buckets after a reconnect
	stop      chan struct{}
	stopOnce  sync.Once
}

// state is a health state: nil is healthy.
type state struct {
	mu  sync.Mutex
	err error
}

func (s *state) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *state) get() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

type metrics struct {
	published    *prometheus.CounterVec
	consumed     *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	panics       *prometheus.CounterVec
	redeclared   *prometheus.CounterVec
}

// Connect dials NATS at url, and declares the streams. producer names this
// service in message headers. reg may be nil.
func Connect(ctx context.Context, url, producer string, logger *zap.Logger, reg prometheus.Registerer) (*Bus, error) {
	nc, err := nats.Connect(url, nats.Name(producer), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
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

// New wraps an existing connection (which the caller keeps owning).
func New(ctx context.Context, nc *nats.Conn, producer string, logger *zap.Logger, reg prometheus.Registerer) (*Bus, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_published_total",
			Help: "Messages published, by type."}, []string{"type"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_consumed_total",
			Help: "Messages handled, by consumer, type and outcome (ack, nak, wait: not ready yet, dead_letter)."}, []string{"consumer", "type", "outcome"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_dead_lettered_total",
			Help: "Messages moved to the dead-letter stream, by consumer."}, []string{"consumer"}),
		redeclared: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_consumers_redeclared_total",
			Help: "Durable consumers declared again after the server lost them (a restart with an empty store, a deleted consumer), by consumer."}, []string{"consumer"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_handler_panics_total",
			Help: "Handler panics recovered, by consumer (durable name or request subject); the message was dead-lettered or answered with an error."}, []string{"consumer"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.published, m.consumed, m.deadLettered, m.panics, m.redeclared} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register bus metrics: %w", err)
			}
		}
	}
	b := &Bus{nc: nc, js: js, producer: producer, logger: logger.With(zap.String("component", "bus")), m: m,
		streams: map[string]jetstream.StreamConfig{}, buckets: map[string]*bucket{}, consumers: map[*Consumer]struct{}{},
		expected: map[string]bool{}, stop: make(chan struct{})}
	for _, cfg := range []jetstream.StreamConfig{lifecycleStream, deadLetterStream} {
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

// Check reports what keeps this service's messaging from working right
// now: a connection that is down, streams or buckets not yet declared again
// after a reconnect, and every consumer that is not consuming (not started
// yet, or its durable consumer lost and being re-declared). Nil means
// ready. It does no I/O.
func (b *Bus) Check() error {
	var errs []error
	if st := b.nc.Status(); st != nats.CONNECTED {
		errs = append(errs, fmt.Errorf("nats connection %s", strings.ToLower(st.String())))
	}
	if err := b.topology.get(); err != nil {
		errs = append(errs, err)
	}
	b.mu.Lock()
	cs := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	var waiting []string
	for pattern, ok := range b.expected {
		if !ok {
			waiting = append(waiting, pattern)
		}
	}
	b.mu.Unlock()
	sort.Strings(waiting)
	for _, pattern := range waiting {
		errs = append(errs, fmt.Errorf("consumer %s: not started", pattern))
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].spec.Durable < cs[j].spec.Durable })
	for _, c := range cs {
		if err := c.Check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Expect makes Check report the durable consumers named by patterns (a
// trailing * matches any suffix) as not started until a consumer of each
// has consumed once — for components that start their consumers inside
// Run, after work readiness must not skip (a KV view to sync).
func (b *Bus) Expect(patterns ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range patterns {
		if _, ok := b.expected[p]; !ok {
			b.expected[p] = false
		}
	}
}

// started records that a consumer of durable consumes.
func (b *Bus) started(durable string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.expected {
		if p == durable || strings.HasSuffix(p, "*") && strings.HasPrefix(durable, strings.TrimSuffix(p, "*")) {
			b.expected[p] = true
		}
	}
}

// keepTopology declares the streams and buckets again after every
// reconnect (with back-off until it works): a server restarted with an
// empty store — or a memory-stored bucket after any restart — has lost them.
func (b *Bus) keepTopology(status chan nats.Status) {
	defer b.nc.RemoveStatusListener(status)
	for {
		select {
		case <-b.stop:
			return
		case st, ok := <-status:
			if !ok || st == nats.CLOSED {
				return
			}
			if st != nats.CONNECTED {
				b.topology.set(fmt.Errorf("nats connection %s: streams and buckets to be declared again", strings.ToLower(st.String())))
				continue
			}
			b.redeclareUntilDone(status)
		}
	}
}

// redeclareUntilDone re-declares the topology, backing off between tries,
// until it works, the bus closes or the connection drops again.
func (b *Bus) redeclareUntilDone(status chan nats.Status) {
	delay := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := b.redeclare(ctx)
		cancel()
		if err == nil {
			b.topology.set(nil)
			b.logger.Info("streams and buckets declared again after a reconnect")
			return
		}
		b.topology.set(fmt.Errorf("declare streams and buckets again after a reconnect: %w", err))
		b.logger.Warn("declaring streams and buckets after a reconnect failed; retrying", zap.Error(err), zap.Duration("delay", delay))
		select {
		case <-b.stop:
			return
		case st, ok := <-status:
			if !ok || st != nats.CONNECTED {
				if ok && st != nats.CLOSED {
					b.topology.set(fmt.Errorf("nats connection %s: streams and buckets to be declared again", strings.ToLower(st.String())))
				}
				return
			}
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// redeclare declares every stream and bucket the bus knows, once.
func (b *Bus) redeclare(ctx context.Context) error {
	b.mu.Lock()
	streams := make([]jetstream.StreamConfig, 0, len(b.streams))
	for _, cfg := range b.streams {
		streams = append(streams, cfg)
	}
	buckets := make([]*bucket, 0, len(b.buckets))
	for _, k := range b.buckets {
		buckets = append(buckets, k)
	}
	b.mu.Unlock()
	var errs []error
	for _, cfg := range streams {
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("declare stream %s: %w", cfg.Name, err))
		}
	}
	for _, k := range buckets {
		if err := k.reopen(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeclareStream creates or updates a stream and keeps its configuration,
// so the bus declares it again after a NATS restart that lost it, and a
// consumer of it comes back. Streams of other packages (a trigger stream)
// should be declared here rather than with the JetStream API directly.
func (b *Bus) DeclareStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("declare stream %s: %w", cfg.Name, err)
	}
	b.mu.Lock()
	b.streams[cfg.Name] = cfg
	b.mu.Unlock()
	return nil
}

// ensureStream declares stream again when the bus knows its configuration.
func (b *Bus) ensureStream(ctx context.Context, stream string) error {
	b.mu.Lock()
	cfg, ok := b.streams[stream]
	b.mu.Unlock()
	if !ok {
		return nil
	}
	if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("declare stream %s: %w", stream, err)
	}
	return nil
}

// publishMsg publishes to JetStream; when no stream answers (a server
// restarted with an empty store, before the bus declared its streams again)
// it declares the known streams and tries once more.
func (b *Bus) publishMsg(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ack, err := b.js.PublishMsg(ctx, msg)
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return ack, err
	}
	if derr := b.redeclare(ctx); derr != nil {
		return nil, errors.Join(err, derr)
	}
	return b.js.PublishMsg(ctx, msg)
}

// Conn is the underlying NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the underlying JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// The streams every service uses.
var (
	lifecycleStream = jetstream.StreamConfig{
		Name:        StreamLifecycle,
		Description: "GreenFlow lifecycle commands and events",
		Subjects:    []string{SubjectCommands + ">", SubjectEvents + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      14 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
	}
	deadLetterStream = jetstream.StreamConfig{
		Name:        StreamDeadLetter,
		Description: "Messages no consumer could process, with the reason in " + HeaderDLQReason,
		Subjects:    []string{SubjectDLQ + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
	}
)

// Publish sends m with the standard headers. msgID de-duplicates within the
// stream's window: give the same id when re-publishing the same fact (a
// handler running twice); "" picks a random one.
func (b *Bus) Publish(ctx context.Context, m events.Message, msgID string) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.MessageType(), err)
	}
	if msgID == "" {
		msgID = uuid.NewString()
	}
	exp, run := m.IDs()
	msg := nats.NewMsg(Subject(m.MessageType()))
	msg.Data = data
	msg.Header.Set(HeaderType, string(m.MessageType()))
	msg.Header.Set(HeaderVersion, strconv.Itoa(m.MessageVersion()))
	msg.Header.Set(nats.MsgIdHdr, msgID)
	msg.Header.Set(HeaderExperiment, exp)
	if run != "" {
		msg.Header.Set(HeaderRun, run)
	}
	msg.Header.Set(HeaderProducer, b.producer)
	if _, err := b.publishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s for run %s: %w", m.MessageType(), run, err)
	}
	b.m.published.WithLabelValues(string(m.MessageType())).Inc()
	return nil
}

// Delivery is one decoded message handed to a handler.
type Delivery struct {
	Msg          events.Message
	Subject      string
	Headers      nats.Header
	NumDelivered uint64
	Timestamp    time.Time
	// InProgress extends the ack deadline for long handlers.
	InProgress func() error
}

// Handler processes one delivery. Returning nil acks; returning an error
// retries with backoff, or dead-letters at once when wrapped by Permanent.
// Handlers must be safe to run twice for the same message.
type Handler func(ctx context.Context, d Delivery) error

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks an error that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// notYet marks a message that cannot be handled yet but will be (the
// analyzer waiting for a window's last samples): it is retried like a
// failure, within MaxDeliver, but logged as waiting, not as a failure.
type notYet struct{ err error }

func (n notYet) Error() string { return n.err.Error() }
func (n notYet) Unwrap() error { return n.err }

// NotYet marks an error that means "not ready to handle this yet": the
// message comes back after the backoff, and is logged at debug level.
func NotYet(err error) error {
	if err == nil {
		return nil
	}
	return notYet{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// DeadLetterFunc is told about a message its consumer dead-letters
// (undecodable, rejected as permanent, out of deliveries), with the
// message's headers (type, experiment, run, ...) and the reason. A consumer
// of commands uses it to answer the sender — a failed load.finished for a
// load.start that cannot be processed — so no run waits out a timeout for a
// reply that cannot come.
type DeadLetterFunc func(ctx context.Context, h nats.Header, reason string)

// ConsumeOption adjusts one Consume call.
type ConsumeOption func(*consumeOptions)

type consumeOptions struct {
	onDeadLetter DeadLetterFunc
}

// OnDeadLetter registers f to be called after a message is dead-lettered.
func OnDeadLetter(f DeadLetterFunc) ConsumeOption {
	return func(o *consumeOptions) { o.onDeadLetter = f }
}

// Consume runs handler for every message matching spec until ctx ends.
// Messages are handled one at a time, in stream order (per run, with
// Workers > 1). It returns an error when the consumer cannot start (its
// durable consumer cannot be declared); once started it survives NATS
// restarts and returns nil when ctx ends. Consume is NewConsumer(...).Run.
func (b *Bus) Consume(ctx context.Context, spec ConsumerSpec, handler Handler, opts ...ConsumeOption) error {
	return b.NewConsumer(spec, handler, opts...).Run(ctx)
}

// NewConsumer declares, without I/O, a consumer of GreenFlow events to be
// run by Run. From now on the bus's Check reports it as not started until
// Run has it consuming: a component that builds its consumers in New and
// runs them in Run is not ready before they are.
func (b *Bus) NewConsumer(spec ConsumerSpec, handler Handler, opts ...ConsumeOption) *Consumer {
	subjects := make([]string, len(spec.Types))
	for i, t := range spec.Types {
		subjects[i] = Subject(t)
	}
	return b.newConsumer(StreamLifecycle, spec, subjects, handler.raw(), opts)
}

// raw decodes a message into its event (dead-lettering what cannot be
// decoded) before calling h.
func (h Handler) raw() RawHandler {
	return func(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		hd := msg.Headers()
		typ := events.Type(hd.Get(HeaderType))
		ver, verr := strconv.Atoi(hd.Get(HeaderVersion))
		var m events.Message
		var err error
		switch {
		case typ == "":
			err = fmt.Errorf("missing %s header", HeaderType)
		case verr != nil:
			err = fmt.Errorf("header %s=%q: expected an integer version", HeaderVersion, hd.Get(HeaderVersion))
		default:
			m, err = events.Decode(typ, ver, msg.Data())
		}
		if err != nil {
			return errUndecodable{err}
		}
		return h(ctx, Delivery{Msg: m, Subject: msg.Subject(), Headers: hd, NumDelivered: md.NumDelivered,
			Timestamp: md.Timestamp, InProgress: msg.InProgress})
	}
}

type errUndecodable struct{ err error }

func (e errUndecodable) Error() string { return e.err.Error() }

// RawHandler processes one message that is not a GreenFlow event (e.g. a
// CI pipeline's event on a trigger subject); errors follow the same policy.
type RawHandler func(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error

// ConsumeRaw runs handler for the messages of stream on the given subjects
// with the standard failure policy (Nak with backoff, MaxDeliver, dead
// letter with the reason), until ctx ends. A stream the bus does not know
// (see DeclareStream) is not re-created after a restart: the consumer
// waits, not ready, until someone declares it again.
func (b *Bus) ConsumeRaw(ctx context.Context, stream string, spec ConsumerSpec, subjects []string, handler RawHandler, opts ...ConsumeOption) error {
	return b.NewRawConsumer(stream, spec, subjects, handler, opts...).Run(ctx)
}

// NewRawConsumer is NewConsumer for messages that are not GreenFlow events.
func (b *Bus) NewRawConsumer(stream string, spec ConsumerSpec, subjects []string, handler RawHandler, opts ...ConsumeOption) *Consumer {
	return b.newConsumer(stream, spec, subjects, handler, opts)
}

// Consumer is one durable consumer with the bus's failure policy. Build it
// with NewConsumer (no I/O), run it with Run; Check says whether it is
// consuming right now. Safe for concurrent use.
type Consumer struct {
	b        *Bus
	stream   string
	spec     ConsumerSpec
	subjects []string
	fn       RawHandler
	o        consumeOptions
	state    state
}

func (b *Bus) newConsumer(stream string, spec ConsumerSpec, subjects []string, fn RawHandler, opts []ConsumeOption) *Consumer {
	c := &Consumer{b: b, stream: stream, spec: spec.withDefaults(), subjects: subjects, fn: fn}
	for _, opt := range opts {
		opt(&c.o)
	}
	c.state.set(fmt.Errorf("consumer %s: not started", spec.Durable))
	b.mu.Lock()
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	return c
}

// Check is nil while the consumer is consuming: its pull subscription is
// up and, since the last reconnect or error, the server has confirmed the
// durable consumer exists.
func (c *Consumer) Check() error { return c.state.get() }

// probeInterval is how often a healthy consumer asks the server whether
// its durable consumer still exists (a reconnect or a subscription error
// asks at once).
const probeInterval = 5 * time.Second

// deletionSettle is how long a consumer waits, after the server deleted its
// durable consumer, before declaring it again.
const deletionSettle = time.Second

// Run consumes until ctx ends. It returns an error only when the consumer
// cannot start; afterwards a lost connection, stream or durable consumer
// is waited out or declared again, with back-off.
func (c *Consumer) Run(ctx context.Context) error {
	b, spec := c.b, c.spec
	defer func() {
		b.mu.Lock()
		delete(b.consumers, c)
		b.mu.Unlock()
	}()
	cfg := jetstream.ConsumerConfig{
		Durable:        spec.Durable,
		FilterSubjects: c.subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		MaxDeliver:     spec.MaxDeliver,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  1000,
	}
	// Listen to the connection before declaring, so no change is missed.
	status := b.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer b.nc.RemoveStatusListener(status)
	cons, err := c.declare(ctx, cfg)
	// A server error or a timeout may pass (e.g. the same durable being
	// deleted as it is declared); anything else, or three failures, is a
	// consumer that cannot start.
	for delay := 100 * time.Millisecond; err != nil && transient(err) && delay <= 400*time.Millisecond && ctx.Err() == nil; delay *= 2 {
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		cons, err = c.declare(ctx, cfg)
	}
	if err != nil {
		c.state.set(fmt.Errorf("consumer %s: %w", spec.Durable, err))
		return fmt.Errorf("declare consumer %s: %w", spec.Durable, err)
	}
	logger := b.logger.With(zap.String("consumer", spec.Durable))
	dispatch := func(msg jetstream.Msg) { b.handle(ctx, logger, spec, c.o, msg, c.fn) }
	var wg sync.WaitGroup
	var queues []chan queued
	var closing sync.RWMutex // held for writing only to close the queues
	closed := false
	if spec.Workers > 1 {
		queues = make([]chan queued, spec.Workers)
		for i := range queues {
			queues[i] = make(chan queued, 64)
			wg.Add(1)
			go func(q chan queued) {
				defer wg.Done()
				for item := range q {
					close(item.picked)
					b.handle(ctx, logger, spec, c.o, item.msg, c.fn)
				}
			}(queues[i])
		}
		dispatch = func(msg jetstream.Msg) {
			h := fnv.New32a()
			_, _ = h.Write([]byte(msg.Headers().Get(HeaderRun)))
			closing.RLock()
			defer closing.RUnlock()
			if closed {
				_ = msg.Nak()
				return
			}
			item := queued{msg: msg, picked: make(chan struct{})}
			select {
			case queues[h.Sum32()%uint32(len(queues))] <- item:
				go keepWhileQueued(ctx, item, spec.AckWait/3)
			case <-ctx.Done():
				_ = msg.Nak() // redelivered after restart
			}
		}
	}
	// Errors of the pull subscription (a missed heartbeat, the consumer
	// deleted) wake the loop below; they are signals, the loop decides.
	subErrs := make(chan error, 8)
	start := func(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
		return cons.Consume(dispatch, jetstream.PullMaxMessages(64), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			select {
			case subErrs <- err:
			default:
			}
		}))
	}
	cc, err := start(cons)
	if err != nil {
		closeQueues(&closing, &closed, queues)
		wg.Wait()
		c.state.set(fmt.Errorf("consumer %s: %w", spec.Durable, err))
		return fmt.Errorf("start consumer %s: %w", spec.Durable, err)
	}
	c.state.set(nil)
	b.started(spec.Durable)

	// redeclare replaces a lost durable consumer (and its stream, when the
	// bus knows it), backing off until it works or ctx ends.
	redeclare := func(why error, settle time.Duration) {
		cc.Stop()
		logger.Warn("consumer lost; declaring it again", zap.Error(why))
		select {
		case <-ctx.Done():
		case <-time.After(settle):
		}
		delay := 100 * time.Millisecond
		for ctx.Err() == nil {
			ncons, err := c.declare(ctx, cfg)
			if err == nil {
				var ncc jetstream.ConsumeContext
				if ncc, err = start(ncons); err == nil {
					cons, cc = ncons, ncc
					c.state.set(nil)
					b.m.redeclared.WithLabelValues(spec.Durable).Inc()
					logger.Info("consumer declared again")
					return
				}
			}
			c.state.set(fmt.Errorf("consumer %s: lost (%v); declaring it again: %w", spec.Durable, why, err))
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			delay = min(delay*2, 5*time.Second)
		}
	}
	// probe asks the server whether the durable consumer is still there.
	probe := func() {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cons.Info(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
		case err == nil:
			if b.nc.IsConnected() {
				c.state.set(nil)
			}
		case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
			c.state.set(fmt.Errorf("consumer %s: %w", spec.Durable, err))
			redeclare(err, 0)
		default:
			c.state.set(fmt.Errorf("consumer %s: cannot reach the server: %w", spec.Durable, err))
		}
	}
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			cc.Drain()
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
				cc.Stop()
			}
			closeQueues(&closing, &closed, queues) // workers Nak what is left (ctx is done) and exit
			wg.Wait()
			return nil
		case st, ok := <-status:
			switch {
			case !ok:
				status = nil
			case st == nats.CONNECTED:
				probe()
			default:
				c.state.set(fmt.Errorf("consumer %s: nats connection %s", spec.Durable, strings.ToLower(st.String())))
			}
		case err := <-subErrs:
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				c.state.set(fmt.Errorf("consumer %s: %w", spec.Durable, err))
				// Deleted while we pulled: the server removes its files
				// after it answers, and a durable of the same name
				// declared meanwhile loses its own (nats-server 2.15:
				// "meta.inf.tmp: no such file" from then on). Let the
				// deletion finish first.
				redeclare(err, deletionSettle)
				continue
			}
			probe() // a missed heartbeat, no responders, ...: is the consumer there?
		case <-tick.C:
			probe()
		}
	}
}

// transient reports whether a failed JetStream request may work when
// tried again: a timeout or a server-side (5xx) error.
func transient(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.Code >= 500
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// declare creates or updates the durable consumer, declaring its stream
// first when the server has lost it and the bus knows its configuration.
func (c *Consumer) declare(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := c.b.js.CreateOrUpdateConsumer(dctx, c.stream, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if serr := c.b.ensureStream(dctx, c.stream); serr != nil {
			return nil, errors.Join(err, serr)
		}
		cons, err = c.b.js.CreateOrUpdateConsumer(dctx, c.stream, cfg)
	}
	return cons, err
}

// queued is a message waiting for its worker.
type queued struct {
	msg    jetstream.Msg
	picked chan struct{} // closed when a worker takes it
}

// keepWhileQueued extends a queued message's ack deadline until a worker
// takes it, so that waiting behind another run's long handler does not get
// it redelivered (and run twice, or out of order).
func keepWhileQueued(ctx context.Context, item queued, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-item.picked:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			_ = item.msg.InProgress()
		}
	}
}

func closeQueues(mu *sync.RWMutex, closed *bool, queues []chan queued) {
	mu.Lock()
	defer mu.Unlock()
	if *closed {
		return
	}
	*closed = true
	for _, q := range queues {
		close(q)
	}
}

// handle applies the failure policy to one message.
func (b *Bus) handle(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, o consumeOptions, msg jetstream.Msg, fn RawHandler) {
	if ctx.Err() != nil {
		_ = msg.Nak() // redelivered after restart
		return
	}
	md, err := msg.Metadata()
	if err != nil {
		logger.Error("message without jetstream metadata", zap.Error(err))
		return
	}
	h := msg.Headers()
	typ := h.Get(HeaderType)
	logger = logger.With(zap.String("type", typ), zap.Uint64("stream_seq", md.Sequence.Stream), zap.String("run_id", h.Get(HeaderRun)))
	stopKeep := keepWhileHandled(msg, spec.AckWait/3)
	herr := callRecovering(ctx, msg, md, fn)
	stopKeep()
	var undecodable errUndecodable
	var panicked errPanic
	switch {
	case herr == nil:
		if err := msg.Ack(); err != nil {
			logger.Warn("ack failed", zap.Error(err))
		}
		b.m.consumed.WithLabelValues(spec.Durable, typ, "ack").Inc()
	case errors.As(herr, &panicked):
		// A panic is a defect the same message would hit again: it is
		// dead-lettered at once, and the consumer goes on with the next.
		b.m.panics.WithLabelValues(spec.Durable).Inc()
		logger.Error("handler panicked", zap.String("panic", fmt.Sprint(panicked.value)), zap.ByteString("stack", panicked.stack))
		b.deadLetter(ctx, logger, spec, o, msg, md, herr.Error())
	case errors.As(herr, &undecodable):
		b.deadLetter(ctx, logger, spec, o, msg, md, "undecodable: "+herr.Error())
	case IsPermanent(herr):
		b.deadLetter(ctx, logger, spec, o, msg, md, "rejected: "+herr.Error())
	case int(md.NumDelivered) >= spec.MaxDeliver:
		b.deadLetter(ctx, logger, spec, o, msg, md, fmt.Sprintf("failed %d deliveries, last error: %v", md.NumDelivered, herr))
	default:
		delay := spec.Backoff[min(int(md.NumDelivered)-1, len(spec.Backoff)-1)]
		outcome := "nak"
		if errors.As(herr, new(notYet)) {
			outcome = "wait"
			logger.Debug("not ready to handle the message yet, will retry", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered), zap.Duration("delay", delay))
		} else {
			logger.Warn("handler failed, will retry", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered), zap.Duration("delay", delay))
		}
		_ = msg.NakWithDelay(delay)
		b.m.consumed.WithLabelValues(spec.Durable, typ, outcome).Inc()
	}
}

func (b *Bus) deadLetter(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, o consumeOptions, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string) {
	dl := nats.NewMsg(SubjectDLQ + msg.Subject())
	dl.Data = msg.Data()
	for k, vs := range msg.Headers() {
		for _, v := range vs {
			dl.Header.Add(k, v)
		}
	}
	dl.Header.Set(HeaderDLQReason, reason)
	dl.Header.Set(HeaderDLQSubject, msg.Subject())
	dl.Header.Set(HeaderDLQConsume, spec.Durable)
	dl.Header.Set(HeaderDLQDeliver, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(HeaderDLQStream, strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(nats.MsgIdHdr, fmt.Sprintf("dlq:%s:%d", spec.Durable, md.Sequence.Stream))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := b.publishMsg(pctx, dl); err != nil {
		// Keep the original: it is redelivered and dead-lettered again later.
		logger.Error("dead-letter publish failed; message kept for redelivery", zap.Error(err))
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	logger.Error("message dead-lettered", zap.String("reason", reason))
	_ = msg.Term()
	if o.onDeadLetter != nil {
		b.notifyDeadLetter(pctx, logger, spec, o.onDeadLetter, msg.Headers(), reason)
	}
	b.m.consumed.WithLabelValues(spec.Durable, string(msg.Headers().Get(HeaderType)), "dead_letter").Inc()
	b.m.deadLettered.WithLabelValues(spec.Durable).Inc()
}

// notifyDeadLetter runs a consumer's dead-letter hook; a panic there is
// logged and counted like a handler's, never allowed to end the consumer.
func (b *Bus) notifyDeadLetter(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, f DeadLetterFunc, h nats.Header, reason string) {
	defer func() {
		if v := recover(); v != nil {
			b.m.panics.WithLabelValues(spec.Durable).Inc()
			logger.Error("dead-letter hook panicked", zap.String("panic", fmt.Sprint(v)), zap.ByteString("stack", debug.Stack()))
		}
	}()
	f(ctx, h, reason)
}

// errPanic is a handler's recovered panic.
type errPanic struct {
	value any
	stack []byte
}

func (e errPanic) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// callRecovering runs fn, turning a panic into errPanic with the stack.
// keepWhileHandled extends msg's ack deadline every `every` until the
// returned stop is called: a handler that takes longer than the ack wait (a
// provision waiting for readiness) keeps its message, while a consumer that
// died lets it go within one ack wait.
func keepWhileHandled(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

func callRecovering(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, fn RawHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = errPanic{value: v, stack: debug.Stack()}
		}
	}()
	return fn(ctx, msg, md)
}

// SafeMsgHandler wraps a core NATS handler — a request-reply API such as
// the scheduler's — so that a panic in it answers the requester with
// {"error": "internal error: panic: ..."} (when it expects a reply), logs
// the stack, counts it under name, and leaves the subscription serving,
// instead of ending the process.
func (b *Bus) SafeMsgHandler(name string, h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			b.m.panics.WithLabelValues(name).Inc()
			b.logger.Error("request handler panicked", zap.String("subject", m.Subject), zap.String("panic", fmt.Sprint(v)),
				zap.ByteString("stack", debug.Stack()))
			if m.Reply == "" {
				return
			}
			body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("internal error: panic: %v", v)})
			if err := m.Respond(body); err != nil {
				b.logger.Warn("error reply after a panic failed", zap.String("subject", m.Subject), zap.Error(err))
			}
		}()
		h(m)
	}
}

// Watch delivers, without durable state, every message of the given types
// published at or after since, until ctx ends. Used by `greenflow submit
// --watch` and tests. Undecodable messages are skipped (the durable
// consumers dead-letter them).
func (b *Bus) Watch(ctx context.Context, since time.Time, types []events.Type, fn func(Delivery)) error {
	subjects := make([]string, len(types))
	for i, t := range types {
		subjects[i] = Subject(t)
	}
	cons, err := b.js.OrderedConsumer(ctx, StreamLifecycle, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return fmt.Errorf("watch %v: %w", types, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		h := msg.Headers()
		ver, _ := strconv.Atoi(h.Get(HeaderVersion))
		m, err := events.Decode(events.Type(h.Get(HeaderType)), ver, msg.Data())
		if err != nil {
			return
		}
		md, _ := msg.Metadata()
		d := Delivery{Msg: m, Subject: msg.Subject(), Headers: h}
		if md != nil {
			d.Timestamp = md.Timestamp
			d.NumDelivered = md.NumDelivered
		}
		defer func() {
			if v := recover(); v != nil {
				b.m.panics.WithLabelValues("watch").Inc()
				b.logger.Error("watch callback panicked; message skipped", zap.String("type", string(d.Msg.MessageType())),
					zap.String("panic", fmt.Sprint(v)), zap.ByteString("stack", debug.Stack()))
			}
		}()
		fn(d)
	})
	if err != nil {
		return fmt.Errorf("watch %v: %w", types, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
