package bus_test

import (
	"fmt"
	"testing"
	"time"

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

// How long listing 10,000 dead letters takes (one message get each):
// go test -run '^$' -bench DeadLetters -benchtime 3x ./pkg/bus/
func BenchmarkDeadLetters10k(b *testing.B) {
	const n = 10_000
	bb := newBus(b)
	js := bb.JetStream()
	for i := range n {
		m := nats.NewMsg(bus.SubjectDLQ + "gf.cmd.load.stop")
		m.Header.Set(bus.HeaderDLQReason, "rejected: no such run")
		m.Header.Set(bus.HeaderDLQConsume, "load-generator")
		m.Header.Set(bus.HeaderDLQDeliver, "1")
		m.Header.Set(bus.HeaderExperiment, fmt.Sprintf("exp-%d", i%7))
		m.Data = []byte(`{"experiment_id":"exp","run_id":"r"}`)
		_, err := js.PublishMsgAsync(m)
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing 10,000 dead letters took over a minute")
	}
	b.ResetTimer()
	for range b.N {
		got := 0
		require.NoError(b, bb.DeadLetters(b.Context(), time.Time{}, func(bus.DeadLetter) error { got++; return nil }))
		require.Equal(b, n, got)
	}
}
