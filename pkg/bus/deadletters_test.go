package bus_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
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

// Batched direct gets and one-by-one message gets (a stream declared
// before it allowed direct gets) list the same dead letters, from --since
// on too.
func TestDeadLettersReadTheSameWithOrWithoutDirectGets(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	js := b.JetStream()
	var times []time.Time
	for i := range 2500 {
		m := nats.NewMsg(bus.SubjectDLQ + "gf.cmd.load.stop")
		m.Header.Set(bus.HeaderDLQReason, fmt.Sprintf("rejected: no run %d", i))
		m.Header.Set(bus.HeaderDLQConsume, "load-generator")
		m.Data = []byte(fmt.Sprintf(`{"n":%d}`, i))
		ack, err := js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
		if ack.Sequence == 1200 {
			stored, err := b.DeadLetterAt(t.Context(), 1200)
			require.NoError(t, err)
			times = append(times, stored.Time)
		}
	}
	list := func(since time.Time) []bus.DeadLetter {
		var out []bus.DeadLetter
		require.NoError(t, b.DeadLetters(t.Context(), since, func(d bus.DeadLetter) error { out = append(out, d); return nil }))
		return out
	}
	direct, directSince := list(time.Time{}), list(times[0])
	require.Len(t, direct, 2500)
	for i, d := range direct {
		require.EqualValues(t, i+1, d.Seq)
		require.Equal(t, fmt.Sprintf("rejected: no run %d", i), d.Reason)
		require.Equal(t, "rejected", d.Kind)
		require.Equal(t, fmt.Sprintf(`{"n":%d}`, i), string(d.Data))
		require.Empty(t, d.Headers.Get("Nats-Sequence"), "the server's own headers are not the message's")
	}
	require.EqualValues(t, 1200, directSince[0].Seq)

	st, err := js.Stream(t.Context(), bus.StreamDeadLetter)
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	require.True(t, cfg.AllowDirect)
	cfg.AllowDirect = false
	_, err = js.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	require.Equal(t, direct, list(time.Time{}))
	require.Equal(t, directSince, list(times[0]))
}

// Any service's seed may write a dead letter, so one naming a subject no
// lifecycle message or trigger event has (a bucket's key, NATS's API, an
// inbox, the dead-letter stream itself) is never replayed there as admin.
func TestReplayPublishesOnlyOnLifecycleOrTriggerSubjects(t *testing.T) {
	t.Parallel()
	b := newBus(t)
	for _, subject := range []string{"$KV.greenflow_tokens.t1", "$JS.API.STREAM.DELETE.GF_LIFECYCLE", "_INBOX_UABC.x", "gf.dlq.gf.cmd.load.stop", ""} {
		m := nats.NewMsg(bus.SubjectDLQ + "forged")
		m.Header.Set(bus.HeaderDLQReason, "rejected: forged")
		m.Header.Set(bus.HeaderDLQSubject, subject)
		m.Header.Set(bus.HeaderDLQMsgID, "m-1")
		m.Data = []byte(`{"token":"x"}`)
		ack, err := b.JetStream().PublishMsg(t.Context(), m)
		require.NoError(t, err)
		d, err := b.DeadLetterAt(t.Context(), ack.Sequence)
		require.NoError(t, err)
		_, err = b.Replay(t.Context(), d)
		require.ErrorIs(t, err, bus.ErrNotReplayable, subject)
		require.ErrorContains(t, err, "is neither a lifecycle message's nor a trigger event's", subject)
	}
}

// A dead letter holds when the service whose consumer it names signed it:
// every durable consumer's name is its service's, or begins with it and
// "-" (the scheduler's trigger consumer, "scheduler-triggers", too).
func TestConsumerNamesBeginWithTheirService(t *testing.T) {
	t.Parallel()
	for _, svc := range events.Services {
		for _, c := range bus.ConsumersOf(svc) {
			name := string(svc)
			require.True(t, c.Durable == name || strings.HasPrefix(c.Durable, name+"-"), "%s runs %s", svc, c.Durable)
		}
	}
}
