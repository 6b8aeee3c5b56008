package bus

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// LogFieldExperiment is the log field naming the experiment of a message
// a watch skipped as unverified (a watching CLI tells its own
// experiment's from others').
const LogFieldExperiment = "experiment_id"

// Watch delivers, without durable state, every message of the given types
// published at or after since, until ctx ends. Used by `greenflow submit
// --watch` and tests. It reads StreamWatch, which the server fills from the
// lifecycle stream within milliseconds. Undecodable and unverified
// messages are skipped (the durable consumers dead-letter them).
func (b *Bus) Watch(ctx context.Context, since time.Time, types []events.Type, fn func(Delivery)) error {
	subjects := typeSubjects(types)
	// On its own stream: a watcher's permission to use any consumer name
	// reaches no service's durable consumer there (StreamWatch).
	cons, err := b.js.OrderedConsumer(ctx, StreamWatch, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return fmt.Errorf("watch %v: %w", types, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		h := msg.Headers()
		if err := b.sig.verifyEvent(msg.Subject(), h, msg.Data()); err != nil {
			// A watcher shows only what the contract's producers said;
			// the durable consumers dead-letter the rest.
			b.m.unverified.WithLabelValues("watch").Inc()
			b.logger.Warn("watch skipped a message whose signature does not hold", zap.Error(err),
				zap.String(LogFieldExperiment, h.Get(HeaderExperiment)), zap.String("type", h.Get(HeaderType)))
			return
		}
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
