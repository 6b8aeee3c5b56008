package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/events"
)

// Publish sends m, in its registered newest version, with the standard
// headers. msgID de-duplicates within the stream's window: give the same id
// when re-publishing the same fact (a handler running twice); "" picks a
// random one. A type the events registry does not know is refused.
func (b *Bus) Publish(ctx context.Context, m events.Message, msgID string) error {
	version := events.Version(m.MessageType())
	if version == 0 {
		return fmt.Errorf("publish %s: %w", m.MessageType(), events.ErrUnknownType)
	}
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
	msg.Header.Set(HeaderVersion, strconv.Itoa(version))
	msg.Header.Set(nats.MsgIdHdr, msgID)
	msg.Header.Set(HeaderExperiment, exp)
	if run != "" {
		msg.Header.Set(HeaderRun, run)
	}
	msg.Header.Set(HeaderProducer, b.producer)
	if err := b.sig.signEvent(msg); err != nil {
		return err
	}
	if _, err := b.publishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s for run %s: %w", m.MessageType(), run, err)
	}
	b.m.published.WithLabelValues(string(m.MessageType())).Inc()
	return nil
}

// publishMsg publishes to JetStream; when no stream answers (a server
// restarted with an empty store, before the bus declared its streams again)
// it declares the known streams and tries once more.
func (b *Bus) publishMsg(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ctx, done := b.refusable(ctx, subjectIs(msg.Subject))
	defer done()
	ack, err := b.js.PublishMsg(ctx, msg)
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return ack, refusal(ctx, err)
	}
	if derr := b.redeclare(ctx); derr != nil {
		return nil, errors.Join(err, derr)
	}
	ack, err = b.js.PublishMsg(ctx, msg)
	return ack, refusal(ctx, err)
}

// PublishMsg publishes msg as it is, signed by this bus's user (sign.go):
// for tools and tests that must send what Publish would not encode (a
// message its schema refuses, to see it dead-lettered for that reason
// rather than as unsigned).
func (b *Bus) PublishMsg(ctx context.Context, msg *nats.Msg) error {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	if err := b.sig.signEvent(msg); err != nil {
		return err
	}
	_, err := b.publishMsg(ctx, msg)
	return err
}
