package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Why a message was dead-lettered: the reason label of
// greenflow_bus_messages_dead_lettered_total.
const (
	dlqPanic           = "panic"             // the handler panicked
	dlqUnverified      = "unverified"        // its signature does not hold
	dlqUndecodable     = "undecodable"       // not a GreenFlow event of a known type and version
	dlqRejected        = "rejected"          // the handler said the failure is permanent
	dlqFailed          = "failed"            // the handler failed on each of MaxDeliver deliveries
	dlqOutOfDeliveries = "out_of_deliveries" // MaxDeliver deliveries spent without an outcome
)

// handle applies the failure policy to one message.
//
// The bus, not the server, enforces MaxDeliver: the durable consumer
// redelivers without limit (consume.go), and a delivery numbered beyond
// spec.MaxDeliver is dead-lettered here before the handler sees it. The
// server counts every delivery, including those that ended without an
// outcome from the handler — the process died or was stopped while
// handling it, its ack wait ran out, it was taken but Nak'ed unhandled at
// shutdown (a Nak spends a delivery like any other). Were the server to
// give up after MaxDeliver itself, such a message would just stop being
// delivered: neither handled nor dead-lettered, and no dead-letter hook
// would answer its sender. A message that crashes its process each time
// is dead-lettered by the process started after its last delivery.
//
// A copy of a message this consumer already settled (done) is only
// acknowledged again: see settled.
func (b *Bus) handle(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, o consumeOptions, keep *keeper, done *settled, msg jetstream.Msg, fn RawHandler) {
	if ctx.Err() != nil {
		// Taken but not handled before a shutdown: redelivered at once to
		// whoever consumes next. It spends a delivery all the same, as
		// leaving it to its ack wait would.
		_ = msg.Nak()
		b.m.consumed.WithLabelValues(spec.Durable, msg.Headers().Get(HeaderType), "interrupted").Inc()
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
	if done.has(md) {
		_ = msg.Ack()
		b.m.consumed.WithLabelValues(spec.Durable, typ, "duplicate").Inc()
		return
	}
	if spent := md.NumDelivered - 1; spent >= uint64(spec.MaxDeliver) {
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqOutOfDeliveries, fmt.Sprintf(
			reasonOutOfDeliveries+": %d deliveries (at most %d) spent, the last ending without an outcome: the consumer died, timed out or shut down while holding it; dead-lettered at delivery %d",
			spent, spec.MaxDeliver, md.NumDelivered))
		return
	}
	release := keep.hold(msg)
	herr := callRecovering(ctx, msg, md, fn)
	release()
	var undecodable errUndecodable
	var unverified errUnverified
	var panicked errPanic
	switch {
	case herr == nil:
		if err := msg.Ack(); err != nil {
			logger.Warn("ack failed", zap.Error(err))
		}
		done.add(md)
		b.m.consumed.WithLabelValues(spec.Durable, typ, "ack").Inc()
	case errors.As(herr, &panicked):
		// A panic is a defect the same message would hit again: it is
		// dead-lettered at once, and the consumer goes on with the next.
		b.m.panics.WithLabelValues(spec.Durable).Inc()
		logger.Error("handler panicked", zap.String("panic", fmt.Sprint(panicked.value)), zap.ByteString("stack", panicked.stack))
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqPanic, herr.Error())
	case errors.As(herr, &unverified):
		o.onDeadLetter = nil // see errUnverified
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqUnverified, "unverified: "+herr.Error())
	case errors.As(herr, &undecodable):
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqUndecodable, "undecodable: "+herr.Error())
	case IsPermanent(herr):
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqRejected, "rejected: "+herr.Error())
	case ctx.Err() != nil:
		// The consumer is shutting down: the failure is most likely the
		// cancellation, not the message's. It is not held against it
		// beyond the delivery it spent.
		logger.Info("handler interrupted by shutdown; the message will be redelivered", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered))
		_ = msg.Nak()
		b.m.consumed.WithLabelValues(spec.Durable, typ, "interrupted").Inc()
	case int(md.NumDelivered) >= spec.MaxDeliver:
		b.deadLetter(ctx, logger, spec, o, done, msg, md, dlqFailed, fmt.Sprintf(reasonFailed+" %d deliveries, last error: %v", md.NumDelivered, herr))
	default:
		delay := spec.Backoff[min(int(md.NumDelivered)-1, len(spec.Backoff)-1)]
		outcome := "nak"
		if errors.Is(herr, notYet) {
			outcome = "wait"
			logger.Debug("not ready to handle the message yet, will retry", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered), zap.Duration("delay", delay))
		} else {
			logger.Warn("handler failed, will retry", zap.Error(herr), zap.Uint64("delivery", md.NumDelivered), zap.Duration("delay", delay))
		}
		_ = msg.NakWithDelay(delay)
		b.m.consumed.WithLabelValues(spec.Durable, typ, outcome).Inc()
	}
}
