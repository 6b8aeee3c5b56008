package bus_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// A Router hands each message to the route of its type; a type without a
// route is a permanent error naming the service and the type.
func TestRouterSendsEachTypeToItsRoute(t *testing.T) {
	t.Parallel()
	var got []string
	h := bus.Router("tester",
		bus.On(func(_ context.Context, m *events.LoadStart) error { got = append(got, "start "+m.RunID); return nil }),
		bus.On(func(_ context.Context, m *events.LoadStop) error { got = append(got, "stop "+m.RunID); return nil }))
	ctx := context.Background()
	require.NoError(t, h(ctx, bus.Delivery{Msg: &events.LoadStart{RunID: "r1"}}))
	require.NoError(t, h(ctx, bus.Delivery{Msg: &events.LoadStop{RunID: "r2"}}))
	require.Equal(t, []string{"start r1", "stop r2"}, got)
	err := h(ctx, bus.Delivery{Msg: &events.RunTeardown{RunID: "r3"}})
	require.True(t, bus.IsPermanent(err))
	require.EqualError(t, err, "tester does not handle *events.RunTeardown")
}
