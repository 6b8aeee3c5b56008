package bus_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
)

// Dead letters written before the kind header say their kind in the
// reason's first words (handle.go's formats); the header wins when there.
func TestDeadLetterKindOfOlderDeadLetters(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]string{
		"panic: runtime error: index out of range [3] with length 3":                    "panic",
		"unverified: load.stop on gf.cmd.load.stop: unsigned: not signed by a producer": "unverified",
		"undecodable: load.stop/v1: jsonschema validation failed":                       "undecodable",
		"rejected: no such run":                                                                 "rejected",
		"failed 5 deliveries, last error: kv update: timeout":                                   "failed",
		"out of deliveries: 5 deliveries (at most 5) spent, the last ending without an outcome": "out_of_deliveries",
		"something a future version says":                                                       "unknown",
	} {
		h := nats.Header{}
		h.Set(bus.HeaderDLQReason, reason)
		require.Equal(t, want, bus.DeadLetterKind(h), reason)
	}
	h := nats.Header{}
	h.Set(bus.HeaderDLQReason, "rejected: no such run")
	h.Set(bus.HeaderDLQKind, "panic")
	require.Equal(t, "panic", bus.DeadLetterKind(h))
}
