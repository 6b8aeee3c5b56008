package testenv

import (
	"context"
	"testing"

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
