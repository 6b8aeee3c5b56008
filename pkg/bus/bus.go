// Package bus is GreenFlow's NATS JetStream layer. It declares, in one place,
// the subjects, streams and durable consumers every service uses; it stamps
// every message with the standard headers (type, version, Nats-Msg-Id,
// experiment, run, producer); and it gives every consumer the same failure
// policy: a message that fails is Nak'ed with backoff, and after MaxDeliver
// attempts — or at once, when it cannot be decoded or the handler says the
// failure is permanent — it is copied to the dead-letter stream with the
// reason, then terminated, so it never blocks the stream and never vanishes.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
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

// ConsumerCollector is one energy-collector instance's consumer: every
// instance sees every assignment.
func ConsumerCollector(instance string) ConsumerSpec {
	return ConsumerSpec{Durable: "energy-collector-" + sanitize(instance), Types: []events.Type{events.TypeCollectAssign, events.TypeCollectRelease}}
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
		c.AckWait = 60 * time.Second
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
}

type metrics struct {
	published    *prometheus.CounterVec
	consumed     *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
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
			Help: "Messages handled, by consumer, type and outcome (ack, nak, dead_letter)."}, []string{"consumer", "type", "outcome"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greenflow_bus_messages_dead_lettered_total",
			Help: "Messages moved to the dead-letter stream, by consumer."}, []string{"consumer"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.published, m.consumed, m.deadLettered} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register bus metrics: %w", err)
			}
		}
	}
	b := &Bus{nc: nc, js: js, producer: producer, logger: logger.With(zap.String("component", "bus")), m: m}
	if err := b.ensureStreams(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// Close closes the NATS connection.
func (b *Bus) Close() { b.nc.Close() }

// Conn is the underlying NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the underlying JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

func (b *Bus) ensureStreams(ctx context.Context) error {
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamLifecycle,
		Description: "GreenFlow lifecycle commands and events",
		Subjects:    []string{SubjectCommands + ">", SubjectEvents + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      14 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("declare stream %s: %w", StreamLifecycle, err)
	}
	_, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamDeadLetter,
		Description: "Messages no consumer could process, with the reason in " + HeaderDLQReason,
		Subjects:    []string{SubjectDLQ + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("declare stream %s: %w", StreamDeadLetter, err)
	}
	return nil
}

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
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
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
// Workers > 1).
func (b *Bus) Consume(ctx context.Context, spec ConsumerSpec, handler Handler, opts ...ConsumeOption) error {
	subjects := make([]string, len(spec.Types))
	for i, t := range spec.Types {
		subjects[i] = Subject(t)
	}
	var o consumeOptions
	for _, opt := range opts {
		opt(&o)
	}
	return b.consume(ctx, StreamLifecycle, spec, subjects, o, func(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		h := msg.Headers()
		typ := events.Type(h.Get(HeaderType))
		ver, verr := strconv.Atoi(h.Get(HeaderVersion))
		var m events.Message
		var err error
		switch {
		case typ == "":
			err = fmt.Errorf("missing %s header", HeaderType)
		case verr != nil:
			err = fmt.Errorf("header %s=%q: expected an integer version", HeaderVersion, h.Get(HeaderVersion))
		default:
			m, err = events.Decode(typ, ver, msg.Data())
		}
		if err != nil {
			return errUndecodable{err}
		}
		return handler(ctx, Delivery{Msg: m, Subject: msg.Subject(), Headers: h, NumDelivered: md.NumDelivered,
			Timestamp: md.Timestamp, InProgress: msg.InProgress})
	})
}

type errUndecodable struct{ err error }

func (e errUndecodable) Error() string { return e.err.Error() }

// RawHandler processes one message that is not a GreenFlow event (e.g. a
// CI pipeline's event on a trigger subject); errors follow the same policy.
type RawHandler func(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error

// ConsumeRaw runs handler for the messages of stream on the given subjects
// with the standard failure policy (Nak with backoff, MaxDeliver, dead
// letter with the reason), until ctx ends.
func (b *Bus) ConsumeRaw(ctx context.Context, stream string, spec ConsumerSpec, subjects []string, handler RawHandler, opts ...ConsumeOption) error {
	var o consumeOptions
	for _, opt := range opts {
		opt(&o)
	}
	return b.consume(ctx, stream, spec, subjects, o, handler)
}

func (b *Bus) consume(ctx context.Context, stream string, spec ConsumerSpec, subjects []string, o consumeOptions, fn RawHandler) error {
	spec = spec.withDefaults()
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:        spec.Durable,
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		MaxDeliver:     spec.MaxDeliver,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  1000,
	})
	if err != nil {
		return fmt.Errorf("declare consumer %s: %w", spec.Durable, err)
	}
	logger := b.logger.With(zap.String("consumer", spec.Durable))
	dispatch := func(msg jetstream.Msg) { b.handle(ctx, logger, spec, o, msg, fn) }
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
					b.handle(ctx, logger, spec, o, item.msg, fn)
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
	cc, err := cons.Consume(dispatch, jetstream.PullMaxMessages(64))
	if err != nil {
		closeQueues(&closing, &closed, queues)
		wg.Wait()
		return fmt.Errorf("start consumer %s: %w", spec.Durable, err)
	}
	<-ctx.Done()
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
		cc.Stop()
	}
	closeQueues(&closing, &closed, queues) // workers Nak what is left (ctx is done) and exit
	wg.Wait()
	return nil
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
	herr := fn(ctx, msg, md)
	var undecodable errUndecodable
	switch {
	case herr == nil:
		if err := msg.Ack(); err != nil {
			logger.Warn("ack failed", zap.Error(err))
		}
		b.m.consumed.WithLabelValues(spec.Durable, typ, "ack").Inc()
	case errors.As(herr, &undecodable):
		b.deadLetter(ctx, logger, spec, o, msg, md, "undecodable: "+herr.Error())
	case IsPermanent(herr):
		b.deadLetter(ctx, logger, spec, o, msg, md, "rejected: "+herr.Error())
	case int(md.NumDelivered) >= spec.MaxDeliver:
		b.deadLetter(ctx, logger, spec, o, msg, md, fmt.Sprintf("failed %d deliveries, last error: %v", md.NumDelivered, herr))
	default:
		delay := spec.Backoff[min(int(md.NumDelivered)-1, len(spec.Backoff)-1)]
		logger.Warn("handler failed, will retry", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered), zap.Duration("delay", delay))
		_ = msg.NakWithDelay(delay)
		b.m.consumed.WithLabelValues(spec.Durable, typ, "nak").Inc()
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
	if _, err := b.js.PublishMsg(pctx, dl); err != nil {
		// Keep the original: it is redelivered and dead-lettered again later.
		logger.Error("dead-letter publish failed; message kept for redelivery", zap.Error(err))
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	logger.Error("message dead-lettered", zap.String("reason", reason))
	_ = msg.Term()
	if o.onDeadLetter != nil {
		o.onDeadLetter(pctx, msg.Headers(), reason)
	}
	b.m.consumed.WithLabelValues(spec.Durable, string(msg.Headers().Get(HeaderType)), "dead_letter").Inc()
	b.m.deadLettered.WithLabelValues(spec.Durable).Inc()
}

// KV opens (creating when needed) a JetStream key-value bucket.
func (b *Bus) KV(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 5, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", bucket, err)
	}
	return kv, nil
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
		fn(d)
	})
	if err != nil {
		return fmt.Errorf("watch %v: %w", types, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
