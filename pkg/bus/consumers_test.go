package bus_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// Every message a service consumes (events registry) is read by exactly one
// of its durable consumers, and no consumer reads more.
func TestConsumersAgreeWithTheEventsRegistry(t *testing.T) {
	t.Parallel()
	require.NoError(t, bus.CheckConsumers(events.Entries()))
	require.Equal(t, []string{"provisioner", "provisioner-states"}, bus.ExpectedConsumers("provisioner"))
	require.Equal(t, []string{"energy-collector-*"}, bus.ExpectedConsumers("energy-collector"))
	require.Equal(t, "energy-collector-host-a_1", bus.ConsumerCollector("host-a/1").Durable)
	require.Equal(t, bus.ConsumerCollector("x").Types, events.ConsumedBy(events.ServiceEnergyCollector))
	require.Empty(t, bus.ExpectedConsumers("greenflow"))
}

// A registry entry that a service's consumers do not follow fails the
// check, naming the service, the type and the consumer.
func TestCheckConsumersFindsWhatNoConsumerReads(t *testing.T) {
	t.Parallel()
	at := func(reg []events.Entry, typ events.Type) *events.Entry {
		for i := range reg {
			if reg[i].Type == typ {
				return &reg[i]
			}
		}
		t.Fatalf("no entry %s", typ)
		return nil
	}
	reg := events.Entries()
	e := at(reg, events.TypeRunState)
	e.Consumers = append(e.Consumers, events.ServiceLoadGenerator) // a new consumer of run.state, no durable consumer for it yet
	require.ErrorContains(t, bus.CheckConsumers(reg), "load-generator: consumes run.state (events registry), but none of its durable consumers reads it")

	reg = events.Entries()
	at(reg, events.TypeRunMeasured).Consumers = nil // the analyzer no longer consumes run.measured
	require.ErrorContains(t, bus.CheckConsumers(reg),
		"analyzer: consumer analyzer reads run.measured, which the events registry does not say analyzer consumes")
}

// A handler's mark survives wrapping and joining, and marks only what it
// marks.
func TestHandlerErrorMarks(t *testing.T) {
	t.Parallel()
	base := errors.New("schema gone")
	require.True(t, bus.IsPermanent(fmt.Errorf("provision: %w", bus.Permanent(base))))
	require.True(t, bus.IsPermanent(errors.Join(bus.NotYet(base), bus.Permanent(base))))
	require.False(t, bus.IsPermanent(bus.NotYet(base)))
	require.False(t, bus.IsPermanent(base))
	require.ErrorIs(t, bus.Permanent(base), base, "the cause stays reachable")
	require.Equal(t, "schema gone", bus.NotYet(base).Error())
	require.NoError(t, bus.Permanent(nil))
	require.NoError(t, bus.NotYet(nil))
}

// A host name becomes a name a consumer and a KV key token accept, and a
// name that is one already stays as it is (the load generator's instance
// check relies on that).
func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"host-a_1": "host-a_1", "host.example.org": "host_example_org", "a/b c*": "a_b_c_", "é": "_"} {
		require.Equal(t, want, bus.SanitizeName(in), in)
	}
}
