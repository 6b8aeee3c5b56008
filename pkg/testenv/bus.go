package testenv

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
)

// Bus connects to the NATS server at url as the service name (with this
// test's logger and no metrics), closed at cleanup: the connection most
// tests drive a component through or publish with.
func Bus(tb testing.TB, url, name string) *bus.Bus {
	tb.Helper()
	b, err := bus.Connect(context.Background(), url, name, Logger(tb), nil)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	return b
}

// BlockConsumer declares the durable consumer durable on stream (filtered
// to filter, when not empty) before a service does, with a configuration
// the service's declaration cannot update (it delivers only new messages):
// the service's consumer then cannot start, and its Run must say so.
func BlockConsumer(tb testing.TB, js jetstream.JetStream, stream, durable, filter string) {
	tb.Helper()
	_, err := js.CreateConsumer(context.Background(), stream, jetstream.ConsumerConfig{Durable: durable,
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: filter})
	require.NoError(tb, err)
}
