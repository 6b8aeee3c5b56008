package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// ConsumeOption adjusts one Consume call.
type ConsumeOption func(*consumeOptions)

type consumeOptions struct {
	onDeadLetter DeadLetterBodyFunc
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
	return b.newConsumer(spec.stream(), spec, typeSubjects(spec.Types), b.verified(handler.raw()), opts)
}

// verified runs fn only for messages signed by a producer of their type
// (sign.go); any other is dead-lettered as unverified.
func (b *Bus) verified(fn RawHandler) RawHandler {
	return func(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		if err := b.sig.verifyEvent(msg.Subject(), msg.Headers(), msg.Data()); err != nil {
			b.m.unverified.WithLabelValues("event").Inc()
			return errUnverified{err}
		}
		return fn(ctx, msg, md)
	}
}

// errUnverified is a message whose signature does not hold. It is
// dead-lettered without the consumer's dead-letter hook: the hook answers
// the sender of a command, and a forged command has none (answering it
// would let a forger fail any run).
type errUnverified struct{ err error }

func (e errUnverified) Error() string { return e.err.Error() }
func (e errUnverified) Unwrap() error { return e.err }

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
			Timestamp: md.Timestamp})
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
	defer func() {
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
	}()
	// Listen to the connection before declaring, so no change is missed.
	status := c.b.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer c.b.nc.RemoveStatusListener(status)
	s := &subscription{c: c, logger: c.b.logger.With(zap.String("consumer", c.spec.Durable)), errs: make(chan error, 8),
		cfg: jetstream.ConsumerConfig{
			Durable:        c.spec.Durable,
			FilterSubjects: c.subjects,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        c.spec.AckWait,
			// Unlimited: the bus enforces spec.MaxDeliver itself and
			// dead-letters what runs out (handle.go); a server that
			// gives up drops the message silently. A durable declared
			// with a limit by an older version is updated in place.
			MaxDeliver:    -1,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: 1000,
		}}
	s.done = newSettled()
	s.keep = startKeeper(c.spec.AckWait/3, c.b.m.extended.WithLabelValues(c.spec.Durable))
	defer s.keep.stop()
	if err := s.open(ctx); err != nil {
		c.state.set(fmt.Errorf("consumer %s: %w", c.spec.Durable, errors.Unwrap(err)))
		return err
	}
	c.state.set(nil)
	c.b.started(c.spec.Durable)
	s.serve(ctx, status)
	return nil
}

// subscription is one Run of a Consumer: its durable consumer on the
// server, the pull subscription on it, and the workers it feeds.
type subscription struct {
	c      *Consumer
	logger *zap.Logger
	cfg    jetstream.ConsumerConfig
	pool   *workers   // nil: messages are handled on the subscription's goroutine
	keep   *keeper    // extends the ack deadline of what is handled or queued
	done   *settled   // what was handled to an outcome, against stale copies
	errs   chan error // of the pull subscription: signals, serve decides
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
}

// open declares the durable consumer and starts consuming it.
func (s *subscription) open(ctx context.Context) error {
	cons, err := s.c.declare(ctx, s.cfg)
	// A server error or a timeout may pass (e.g. the same durable being
	// deleted as it is declared); anything else, or three failures, is a
	// consumer that cannot start.
	for delay := 100 * time.Millisecond; err != nil && transient(err) && delay <= 400*time.Millisecond && ctx.Err() == nil; delay *= 2 {
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		cons, err = s.c.declare(ctx, s.cfg)
	}
	if err != nil {
		return fmt.Errorf("declare consumer %s: %w", s.c.spec.Durable, err)
	}
	if n := s.c.spec.Workers; n > 1 {
		s.pool = startWorkers(n, s.keep, func(msg jetstream.Msg) { s.handle(ctx, msg) })
	}
	if s.cc, err = s.consume(ctx, cons); err != nil {
		if s.pool != nil {
			s.pool.stop()
		}
		return fmt.Errorf("start consumer %s: %w", s.c.spec.Durable, err)
	}
	s.cons = cons
	return nil
}

func (s *subscription) handle(ctx context.Context, msg jetstream.Msg) {
	s.c.b.handle(ctx, s.logger, s.c.spec, s.c.o, s.keep, s.done, msg, s.c.fn)
}

// consume starts the pull subscription on cons.
func (s *subscription) consume(ctx context.Context, cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	dispatch := func(msg jetstream.Msg) { s.handle(ctx, msg) }
	if s.pool != nil {
		dispatch = func(msg jetstream.Msg) { s.pool.dispatch(ctx, msg) }
	}
	return cons.Consume(dispatch, jetstream.PullMaxMessages(64), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		select {
		case s.errs <- err:
		default:
		}
	}))
}

// serve keeps the subscription going until ctx ends: it probes the
// durable consumer after a reconnect, a subscription error and every
// probeInterval, and declares it again when the server lost it. Then it
// drains what was pulled and stops the workers.
func (s *subscription) serve(ctx context.Context, status chan nats.Status) {
	durable := s.c.spec.Durable
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.cc.Drain()
			select {
			case <-s.cc.Closed():
			case <-time.After(5 * time.Second):
				s.cc.Stop()
			}
			if s.pool != nil {
				s.pool.stop() // the workers Nak what is left (ctx is done)
			}
			return
		case st, ok := <-status:
			switch {
			case !ok:
				status = nil
			case st == nats.CONNECTED:
				s.probe(ctx)
			default:
				s.c.state.set(fmt.Errorf("consumer %s: nats connection %s", durable, strings.ToLower(st.String())))
			}
		case err := <-s.errs:
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				s.c.state.set(fmt.Errorf("consumer %s: %w", durable, err))
				// Deleted while we pulled: the server removes its files
				// after it answers, and a durable of the same name
				// declared meanwhile loses its own (nats-server 2.15:
				// "meta.inf.tmp: no such file" from then on). Let the
				// deletion finish first.
				s.redeclare(ctx, err, deletionSettle)
				continue
			}
			s.probe(ctx) // a missed heartbeat, no responders, ...: is the consumer there?
		case <-tick.C:
			s.probe(ctx)
		}
	}
}

// probe asks the server whether the durable consumer is still there, and
// declares it again when it is not.
func (s *subscription) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := s.cons.Info(pctx)
	cancel()
	switch {
	case ctx.Err() != nil:
	case err == nil:
		if s.c.b.nc.IsConnected() {
			s.c.state.set(nil)
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
		s.c.state.set(fmt.Errorf("consumer %s: %w", s.c.spec.Durable, err))
		s.redeclare(ctx, err, 0)
	default:
		s.c.state.set(fmt.Errorf("consumer %s: cannot reach the server: %w", s.c.spec.Durable, err))
	}
}

// redeclare replaces a lost durable consumer (and its stream, when the bus
// knows it), backing off until it works or ctx ends.
func (s *subscription) redeclare(ctx context.Context, why error, settle time.Duration) {
	durable := s.c.spec.Durable
	s.cc.Stop()
	s.logger.Warn("consumer lost; declaring it again", zap.Error(why))
	select {
	case <-ctx.Done():
	case <-time.After(settle):
	}
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		cons, err := s.c.declare(ctx, s.cfg)
		if err == nil {
			var cc jetstream.ConsumeContext
			if cc, err = s.consume(ctx, cons); err == nil {
				s.cons, s.cc = cons, cc
				s.c.state.set(nil)
				s.c.b.m.redeclared.WithLabelValues(durable).Inc()
				s.logger.Info("consumer declared again")
				return
			}
		}
		s.c.state.set(fmt.Errorf("consumer %s: lost (%v); declaring it again: %w", durable, why, err))
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
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
