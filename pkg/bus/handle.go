package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// handle applies the failure policy to one message.
func (b *Bus) handle(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, o consumeOptions, keep *keeper, msg jetstream.Msg, fn RawHandler) {
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
		b.m.consumed.WithLabelValues(spec.Durable, typ, "ack").Inc()
	case errors.As(herr, &panicked):
		// A panic is a defect the same message would hit again: it is
		// dead-lettered at once, and the consumer goes on with the next.
		b.m.panics.WithLabelValues(spec.Durable).Inc()
		logger.Error("handler panicked", zap.String("panic", fmt.Sprint(panicked.value)), zap.ByteString("stack", panicked.stack))
		b.deadLetter(ctx, logger, spec, o, msg, md, herr.Error())
	case errors.As(herr, &unverified):
		o.onDeadLetter = nil // see errUnverified
		b.deadLetter(ctx, logger, spec, o, msg, md, "unverified: "+herr.Error())
	case errors.As(herr, &undecodable):
		b.deadLetter(ctx, logger, spec, o, msg, md, "undecodable: "+herr.Error())
	case IsPermanent(herr):
		b.deadLetter(ctx, logger, spec, o, msg, md, "rejected: "+herr.Error())
	case int(md.NumDelivered) >= spec.MaxDeliver:
		b.deadLetter(ctx, logger, spec, o, msg, md, fmt.Sprintf("failed %d deliveries, last error: %v", md.NumDelivered, herr))
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
