package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// Streams and subject roots.
const (
	StreamLifecycle  = "GF_LIFECYCLE"
	StreamDeadLetter = "GF_DEADLETTER"
	// StreamCollectors and StreamWatch copy lifecycle messages (sourced by
	// the server) for the users whose consumer names cannot be listed in
	// their permissions: every energy-collector instance has its own
	// durable and every watcher its own ordered consumers, and a NATS
	// subject cannot bound a name prefix. Their permission is "any
	// consumer" on their own stream only, so it reaches no other service's
	// consumer: with it on the lifecycle stream a trial pulled and acked a
	// run.torn_down meant for the scheduler with the collectors' seed.
	StreamCollectors = "GF_COLLECTORS"
	StreamWatch      = "GF_WATCH"
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

// Subject is where messages of type t are published: commands (addressed
// to one service, says the events registry) under gf.cmd., everything else
// under gf.evt..
func Subject(t events.Type) string {
	if e, ok := events.Lookup(t); ok && e.Kind == events.Command {
		return SubjectCommands + string(t)
	}
	return SubjectEvents + string(t)
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
		if err := b.declare(ctx, cfg); err != nil {
			errs = append(errs, err)
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
	if err := b.declare(ctx, cfg); err != nil {
		return err
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
	return b.declare(ctx, cfg)
}

// declares reports whether this bus creates and updates stream st: always
// on a NATS without authentication (tests, each service on its own); with
// it, only as admin (Declares) — every other user may only look it up.
func (b *Bus) declares(st string) bool { return !b.secured || Declares(b.producer, st) }

// declare creates or updates stream cfg when this bus declares it, and
// otherwise waits (with ctx) until the declarer has — with cfg's subjects,
// so a service that needs a subject added (the scheduler's armed
// triggers) waits until the declarer has added it.
func (b *Bus) declare(ctx context.Context, cfg jetstream.StreamConfig) error {
	ctx, done := b.refusable(ctx, jsAPIOn(cfg.Name))
	defer done()
	if b.declares(cfg.Name) {
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("declare stream %s: %w", cfg.Name, refusal(ctx, err))
		}
		return nil
	}
	return b.awaitDeclared(ctx, "stream "+cfg.Name, func() error {
		st, err := b.js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return errNotYet
		}
		if err != nil {
			return refusal(ctx, err)
		}
		for _, s := range cfg.Subjects {
			if !slices.Contains(st.CachedInfo().Config.Subjects, s) {
				return errNotYet
			}
		}
		return nil
	})
}

// declareWait bounds the wait for a stream or bucket another user owns.
const declareWait = time.Minute

// errNotYet means a stream or bucket is not declared yet.
var errNotYet = errors.New("not declared yet")

// awaitDeclared polls lookup until it finds what its owner declares
// (errNotYet until then), saying once that it waits.
func (b *Bus) awaitDeclared(ctx context.Context, what string, lookup func() error) error {
	deadline := time.After(declareWait)
	for said := false; ; said = true {
		err := lookup()
		if !errors.Is(err, errNotYet) {
			if err != nil {
				return fmt.Errorf("look up %s: %w", what, err)
			}
			return nil
		}
		if !said {
			b.logger.Info("waiting for admin to declare a stream or bucket (this user may only look it up)", zap.String("what", what))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("look up %s: not declared yet: %w", what, ctx.Err())
		case <-deadline:
			return fmt.Errorf("look up %s: not declared within %s (only admin declares streams and buckets: is `greenflow nats declare --keep` or the cluster's nats-topology running?)", what, declareWait)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

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
	// collectorStream holds only what the energy-collectors consume.
	collectorStream = sourced(StreamCollectors, "The lifecycle messages energy-collectors consume, for their consumers only",
		typeSubjects(events.ConsumedBy(events.ServiceEnergyCollector)))
	// watchStream holds every lifecycle message, for Bus.Watch.
	watchStream      = sourced(StreamWatch, "The lifecycle messages, for watchers (greenflow submit --watch)", lifecycleStream.Subjects)
	deadLetterStream = jetstream.StreamConfig{
		Name:        StreamDeadLetter,
		Description: "Messages no consumer could process, with the reason in " + HeaderDLQReason,
		Subjects:    []string{SubjectDLQ + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		MaxBytes:    deadLetterBytes, // full: the oldest go (any service may dead-letter)
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
		// Read in batches by `greenflow dead-letters` (Bus.DeadLetters).
		AllowDirect: true,
	}
)

// sourced is a stream the server fills with the lifecycle messages on
// subjects (it has no subjects of its own, so nobody publishes into it),
// kept as long as the lifecycle stream keeps them.
func sourced(name, description string, subjects []string) jetstream.StreamConfig {
	transforms := make([]jetstream.SubjectTransformConfig, len(subjects))
	for i, s := range subjects {
		transforms[i] = jetstream.SubjectTransformConfig{Source: s, Destination: s}
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Sources:     []*jetstream.StreamSource{{Name: StreamLifecycle, SubjectTransforms: transforms}},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      lifecycleStream.MaxAge,
		Storage:     jetstream.FileStorage,
	}
}

// typeSubjects are the subjects of types.
func typeSubjects(types []events.Type) []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = Subject(t)
	}
	return out
}
