package bus

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// DeadLetterFunc is told about a message its consumer dead-letters
// (undecodable, rejected as permanent, failed or out of deliveries — also
// when its deliveries were spent by processes that died holding it), with the
// message's headers (type, experiment, run, ...) and the reason. A consumer
// of commands uses it to answer the sender — a failed load.finished for a
// load.start that cannot be processed — so no run waits out a timeout for a
// reply that cannot come.
type DeadLetterFunc func(ctx context.Context, h nats.Header, reason string)

// How the reasons a retry may get past begin (see RetryMayHelp).
const (
	reasonFailed          = "failed"
	reasonOutOfDeliveries = "out of deliveries"
)

// RetryMayHelp reports whether a dead-letter reason is one a new attempt of
// the work may get past: the handler failed on every delivery (its
// infrastructure — NATS KV, a broker — kept failing), or the deliveries were
// spent by processes that died or stopped holding the message. Not an
// undecodable, unverified or rejected message, nor one whose handler
// panicked: those fail the same way again.
func RetryMayHelp(reason string) bool {
	return strings.HasPrefix(reason, reasonFailed+" ") || strings.HasPrefix(reason, reasonOutOfDeliveries+":")
}

// DeadLetterBodyFunc is a DeadLetterFunc told the message's body too: a
// hook that records what the message said (the scheduler's row of a
// dead-lettered submission, with its spec) rather than only answering it.
type DeadLetterBodyFunc func(ctx context.Context, h nats.Header, body []byte, reason string)

// OnDeadLetter registers f to be called after a message is dead-lettered.
func OnDeadLetter(f DeadLetterFunc) ConsumeOption {
	return OnDeadLetterBody(func(ctx context.Context, h nats.Header, _ []byte, reason string) { f(ctx, h, reason) })
}

// OnDeadLetterBody is OnDeadLetter with the message's body.
func OnDeadLetterBody(f DeadLetterBodyFunc) ConsumeOption {
	return func(o *consumeOptions) { o.onDeadLetter = f }
}

func (b *Bus) deadLetter(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, o consumeOptions, done *settled, msg jetstream.Msg, md *jetstream.MsgMetadata, kind, reason string) {
	dl := nats.NewMsg(SubjectDLQ + msg.Subject())
	dl.Data = msg.Data()
	for k, vs := range msg.Headers() {
		for _, v := range vs {
			dl.Header.Add(k, v)
		}
	}
	// A header is one line (nats.go would fold a newline into a space
	// after the signature covered it).
	dl.Header.Set(HeaderDLQReason, strings.Join(strings.Fields(reason), " "))
	dl.Header.Set(HeaderDLQKind, kind)
	dl.Header.Set(HeaderDLQSubject, msg.Subject())
	dl.Header.Set(HeaderDLQConsume, spec.Durable)
	dl.Header.Set(HeaderDLQDeliver, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(HeaderDLQStream, strconv.FormatUint(md.Sequence.Stream, 10))
	// The copy's own id de-duplicates dead-lettering; the original's is
	// kept apart, as its signature covers it (Replay checks it).
	if id := msg.Headers().Get(nats.MsgIdHdr); id != "" {
		dl.Header.Set(HeaderDLQMsgID, id)
	}
	dl.Header.Set(nats.MsgIdHdr, fmt.Sprintf("dlq:%s:%d", spec.Durable, md.Sequence.Stream))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := b.sig.signDeadLetter(dl)
	if err == nil {
		_, err = b.publishMsg(pctx, dl)
	}
	if err != nil {
		// Keep the original: it is redelivered and dead-lettered again
		// later (as out of deliveries, when this was its last).
		logger.Error("dead-letter sign or publish failed; message kept for redelivery", zap.Error(err))
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	logger.Error("message dead-lettered", zap.String("reason", reason))
	_ = msg.Term()
	done.add(md)
	if o.onDeadLetter != nil {
		b.notifyDeadLetter(pctx, logger, spec, o.onDeadLetter, msg.Headers(), msg.Data(), reason)
	}
	b.m.consumed.WithLabelValues(spec.Durable, string(msg.Headers().Get(HeaderType)), "dead_letter").Inc()
	b.m.deadLettered.WithLabelValues(spec.Durable, kind).Inc()
}

// notifyDeadLetter runs a consumer's dead-letter hook; a panic there is
// logged and counted like a handler's, never allowed to end the consumer.
func (b *Bus) notifyDeadLetter(ctx context.Context, logger *zap.Logger, spec ConsumerSpec, f DeadLetterBodyFunc, h nats.Header, body []byte, reason string) {
	defer func() {
		if v := recover(); v != nil {
			b.m.panics.WithLabelValues(spec.Durable).Inc()
			logger.Error("dead-letter hook panicked", zap.String("panic", fmt.Sprint(v)), zap.ByteString("stack", debug.Stack()))
		}
	}()
	f(ctx, h, body, reason)
}
