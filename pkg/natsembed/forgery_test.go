package natsembed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// These tests put other users' bytes where a service reads lifecycle
// messages and key-value records, on the real embedded server with
// authentication and permissions on, and check that no service believes
// them (pkg/bus/sign.go). Subject permissions cannot stop every such path:
// the type header is not a subject (a producer may publish anything on its
// own subjects), and the server publishes on its clients' behalf — a
// stream's republish (a trial used its own bucket's to reach
// gf.evt.run.analyzed and the token bucket) and a push consumer's
// deliver_subject (nats-io/nats-server#8274). Here admin sets the republish
// up, standing for any such hole; the bytes are the forger's.

// republish has the server republish stream's messages on from to to.
func republish(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, from, to string) {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	cfg.RePublish = &jetstream.RePublish{Source: from, Destination: to}
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
}

// plainKV is bucket as user opens it through plain JetStream, not
// through pkg/bus: what is written there carries no seal.
func plainKV(ctx context.Context, t *testing.T, s testenv.SecureNATS, user, bucket string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(s.Conn(t, user))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	return kv
}

// writeUnsealed writes into bucket, as user through plain JetStream (so
// with no seal), a record live = {"state":"done"} and a record gone that
// it deletes again.
func writeUnsealed(ctx context.Context, t *testing.T, s testenv.SecureNATS, user, bucket, live, gone string) {
	t.Helper()
	kv := plainKV(ctx, t, s, user, bucket)
	_, err := kv.Put(ctx, live, []byte(`{"state":"done"}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, gone, []byte(`{}`))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, gone))
}

// deadLetters reads the dead-letter stream's messages as admin.
func deadLetters(ctx context.Context, t *testing.T, js jetstream.JetStream) []nats.Header {
	t.Helper()
	st, err := js.Stream(ctx, bus.StreamDeadLetter)
	require.NoError(t, err)
	var out []nats.Header
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		require.NoError(t, err)
		out = append(out, m.Header)
	}
}

// eventMsg is a lifecycle message on subject with every header a real one
// of m's type has, unsigned.
func eventMsg(t *testing.T, subject string, m events.Message, id string) *nats.Msg {
	t.Helper()
	msg := nats.NewMsg(subject)
	var err error
	msg.Data, err = json.Marshal(m)
	require.NoError(t, err)
	exp, run := m.IDs()
	msg.Header.Set(bus.HeaderType, string(m.MessageType()))
	msg.Header.Set(bus.HeaderVersion, strconv.Itoa(events.Version(m.MessageType())))
	msg.Header.Set(nats.MsgIdHdr, id)
	msg.Header.Set(bus.HeaderExperiment, exp)
	msg.Header.Set(bus.HeaderRun, run)
	msg.Header.Set(bus.HeaderProducer, string(events.ServiceAnalyzer))
	return msg
}

func TestForgedAndMovedEventsAreDeadLetteredNotHandled(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(s.Conn(t, bus.UserAdmin)) // the streams and buckets: declared by NATSWithAuth, as admin
	require.NoError(t, err)

	// The scheduler's real consumer, recording what its handler is given.
	var mu sync.Mutex
	var handled []string
	sched := s.Bus(t, string(events.ServiceScheduler))
	go func() {
		_ = sched.Consume(ctx, bus.ConsumerScheduler, func(_ context.Context, d bus.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, d.Headers.Get(nats.MsgIdHdr))
			return nil
		})
	}()
	handledIDs := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), handled...)
	}

	// A genuine run.analyzed, signed by the analyzer, is handled.
	analyzer := s.Bus(t, string(events.ServiceAnalyzer))
	require.NoError(t, analyzer.Publish(ctx, &events.RunAnalyzed{ExperimentID: "e1", RunID: "e1-r000", EnergyJ: 5, TsMs: 1}, "genuine-1"))
	testenv.Eventually(t, 10*time.Second, "the genuine run.analyzed handled", func() bool { return len(handledIDs()) == 1 })
	life, err := js.Stream(ctx, bus.StreamLifecycle)
	require.NoError(t, err)
	genuine, err := life.GetLastMsgForSubject(ctx, bus.Subject(events.TypeRunAnalyzed))
	require.NoError(t, err)

	// 1. The provisioner may publish on gf.evt.run.provisioned: it sends a
	// run.analyzed there, all headers set, and a copy of the analyzer's
	// genuine, signed one.
	prov := s.Conn(t, string(events.ServiceProvisioner))
	provisioned := bus.Subject(events.TypeRunProvisioned)
	require.NoError(t, prov.PublishMsg(eventMsg(t, provisioned, &events.RunAnalyzed{ExperimentID: "e1", RunID: "e1-r001", EnergyJ: 0.001, TsMs: 2}, "typed-1")))
	moved := nats.NewMsg(provisioned)
	moved.Data, moved.Header = genuine.Data, genuine.Header
	moved.Header.Set(nats.MsgIdHdr, "moved-1")
	require.NoError(t, prov.PublishMsg(moved))

	// 2. The collector writes a run.analyzed of its own making into its
	// bucket, and the server republishes it onto gf.evt.run.analyzed.
	republish(ctx, t, js, "KV_"+bus.BucketCollectors, "$KV."+bus.BucketCollectors+".forged", bus.Subject(events.TypeRunAnalyzed))
	forged := eventMsg(t, "$KV."+bus.BucketCollectors+".forged", &events.RunAnalyzed{ExperimentID: "e1", RunID: "e1-r002", EnergyJ: 0.001, TsMs: 3}, "forged-1")
	require.NoError(t, s.Conn(t, string(events.ServiceEnergyCollector)).PublishMsg(forged))

	// All three land in the lifecycle stream: NATS did not stop them.
	testenv.Eventually(t, 10*time.Second, "the republished message in the lifecycle stream", func() bool {
		m, err := life.GetLastMsgForSubject(ctx, bus.Subject(events.TypeRunAnalyzed))
		return err == nil && m.Header.Get(nats.MsgIdHdr) == "forged-1"
	})

	// Each is dead-lettered as unverified, and the handler saw none.
	var reasons []string
	testenv.Eventually(t, 10*time.Second, "all three dead-lettered", func() bool {
		reasons = reasons[:0]
		for _, h := range deadLetters(ctx, t, js) {
			reasons = append(reasons, h.Get(nats.MsgIdHdr)+" "+h.Get(bus.HeaderDLQReason))
		}
		return len(reasons) >= 3
	})
	joined := strings.Join(reasons, "\n")
	t.Log(joined)
	require.Contains(t, joined, "unverified: run.analyzed on "+provisioned+": unsigned")
	require.Contains(t, joined, "unverified: run.analyzed on "+provisioned+": signature by analyzer does not match")
	require.Contains(t, joined, "unverified: run.analyzed on gf.evt.run.analyzed: unsigned")
	require.Equal(t, []string{"genuine-1"}, handledIDs(), "only the genuine message reached the handler")
}

func TestTokenDeliveredIntoTheTokenBucketIsNotBelieved(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The scheduler's token store, as the API checks tokens with it; a
	// genuine token works.
	store, err := auth.OpenStore(ctx, s.Bus(t, string(events.ServiceScheduler)), clock.RealClock{})
	require.NoError(t, err)
	real, _, err := store.Create(ctx, "ci", auth.Viewer, 0)
	require.NoError(t, err)
	_, err = store.Verify(ctx, real)
	require.NoError(t, err)

	// The CLI's seed makes an admin token's record in the bucket it owns,
	// with the token code itself (so the record is exactly a real one),
	// and the server republishes it into the token bucket.
	js, err := jetstream.New(s.Conn(t, bus.UserAdmin))
	require.NoError(t, err)
	republish(ctx, t, js, "KV_"+bus.BucketTestbed, "$KV."+bus.BucketTestbed+".*", "$KV."+bus.BucketTokens+".{{wildcard(1)}}")
	own := plainKV(ctx, t, s, string(events.ServiceCLI), bus.BucketTestbed)
	plain, tok, err := auth.NewStore(own, clock.RealClock{}).Create(ctx, "evil", auth.Admin, 0)
	require.NoError(t, err)
	raw, err := js.KeyValue(ctx, bus.BucketTokens)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "the forged record in the token bucket", func() bool {
		e, err := raw.Get(ctx, tok.ID)
		return err == nil && strings.Contains(string(e.Value()), tok.Hash)
	})

	// The record is there; the token is not believed, by the scheduler nor
	// by the analyzer and console, which read the bucket too.
	_, err = store.Verify(ctx, plain)
	require.ErrorIs(t, err, auth.ErrUnknownToken)
	for _, svc := range []events.Service{events.ServiceAnalyzer, events.ServiceConsole} {
		st, err := auth.OpenStore(ctx, s.Bus(t, string(svc)), clock.RealClock{})
		require.NoError(t, err)
		_, err = st.Verify(ctx, plain)
		require.ErrorIs(t, err, auth.ErrUnknownToken, fmt.Sprint(svc))
	}
	all, err := store.List(ctx)
	require.NoError(t, err)
	for _, t2 := range all {
		require.NotEqual(t, "evil", t2.Name, "the forged token listed")
	}
	// The genuine token still works.
	_, err = store.Verify(ctx, real)
	require.NoError(t, err)
}

func TestForgedRecordsChangeNothingAServiceSees(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The scheduler's bucket as the scheduler reads and watches it.
	kv, err := s.Bus(t, string(events.ServiceScheduler)).KV(ctx, bus.BucketScheduler)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "exp-a", []byte(`{"state":"running"}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "exp-b", []byte(`{"state":"queued"}`))
	require.NoError(t, err)
	w, err := kv.WatchAll(ctx)
	require.NoError(t, err)
	defer func() { _ = w.Stop() }()
	seen := map[string]string{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		seen[e.Key()] = string(e.Value())
	}
	require.Equal(t, map[string]string{"exp-a": `{"state":"running"}`, "exp-b": `{"state":"queued"}`}, seen, "values without their seals")

	// The collector's puts and deletes in its own bucket reach the
	// scheduler's, through a republish.
	js, err := jetstream.New(s.Conn(t, bus.UserAdmin))
	require.NoError(t, err)
	republish(ctx, t, js, "KV_"+bus.BucketCollectors, "$KV."+bus.BucketCollectors+".*", "$KV."+bus.BucketScheduler+".{{wildcard(1)}}")
	writeUnsealed(ctx, t, s, string(events.ServiceEnergyCollector), bus.BucketCollectors, "exp-a", "exp-b")
	raw, err := js.KeyValue(ctx, bus.BucketScheduler)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "the forged records in the scheduler's bucket", func() bool {
		a, aerr := raw.Get(ctx, "exp-a")
		_, berr := raw.Get(ctx, "exp-b")
		return aerr == nil && string(a.Value()) == `{"state":"done"}` && errors.Is(berr, jetstream.ErrKeyNotFound)
	})

	// The scheduler still reads what it wrote, and its watch passed none
	// of it on.
	a, err := kv.Get(ctx, "exp-a")
	require.NoError(t, err)
	require.Equal(t, `{"state":"running"}`, string(a.Value()))
	b, err := kv.Get(ctx, "exp-b")
	require.NoError(t, err, "a forged delete deleted nothing")
	require.Equal(t, `{"state":"queued"}`, string(b.Value()))
	hist, err := kv.History(ctx, "exp-a")
	require.NoError(t, err)
	require.Len(t, hist, 1, "the history holds only the scheduler's record")
	// Its own changes go on: an update at the revision it read, a delete.
	_, err = kv.Update(ctx, "exp-a", []byte(`{"state":"done"}`), a.Revision())
	require.Error(t, err, "the newest revision is the forged one: an update at the one read conflicts")
	_, err = kv.Put(ctx, "exp-a", []byte(`{"state":"cancelled"}`))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "exp-b"))
	_, err = kv.Get(ctx, "exp-b")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	a2, err := kv.Get(ctx, "exp-a")
	require.NoError(t, err)
	require.Equal(t, `{"state":"cancelled"}`, string(a2.Value()))
	require.ErrorIs(t, bus.DeleteRevision(ctx, kv, "exp-a", a2.Revision()-1), jetstream.ErrKeyExists, "a delete at a stale revision conflicts")
	require.NoError(t, bus.DeleteRevision(ctx, kv, "exp-a", a2.Revision()))
	_, err = kv.Get(ctx, "exp-a")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	// What the watch passed on after its initial values: only the
	// scheduler's own changes, in order.
	var after []string
	timeout := time.After(2 * time.Second)
	for len(after) < 3 {
		select {
		case e := <-w.Updates():
			after = append(after, e.Key()+" "+e.Operation().String()+" "+string(e.Value()))
		case <-timeout:
			t.Fatalf("watch passed on %v, expected the scheduler's three changes", after)
		}
	}
	require.Equal(t, []string{
		`exp-a KeyValuePutOp {"state":"cancelled"}`, "exp-b KeyValueDeleteOp ", "exp-a KeyValueDeleteOp ",
	}, after)
}

// A stack upgraded from a version without signatures: its records carry no
// seal, so every reader skips them until admin seals them, once.
func TestSealUnsignedKeepsWhatAnOlderVersionWrote(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// What the older scheduler wrote: plain values.
	writeUnsealed(ctx, t, s, string(events.ServiceScheduler), bus.BucketScheduler, "exp-old", "exp-gone")

	kv, err := s.Bus(t, string(events.ServiceScheduler)).KV(ctx, bus.BucketScheduler)
	require.NoError(t, err)
	_, err = kv.Get(ctx, "exp-old")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "an unsigned record is skipped")

	sealed, err := bus.SealUnsigned(ctx, s.Bus(t, bus.UserAdmin))
	require.NoError(t, err)
	require.Equal(t, map[string]int{bus.BucketScheduler: 1}, sealed, "the live record, not the deleted one")
	e, err := kv.Get(ctx, "exp-old")
	require.NoError(t, err)
	require.Equal(t, `{"state":"done"}`, string(e.Value()))
	_, err = kv.Get(ctx, "exp-gone")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	sealed, err = bus.SealUnsigned(ctx, s.Bus(t, bus.UserAdmin))
	require.NoError(t, err)
	require.Empty(t, sealed, "nothing left to seal")
	_, err = bus.SealUnsigned(ctx, s.Bus(t, string(events.ServiceScheduler)))
	require.ErrorContains(t, err, "only admin", "a service cannot vouch")
}

// The trigger user (a CI pipeline's seed) fires triggers on subjects of its
// own and touches nothing of GreenFlow's or of NATS's: before it, only
// admin's seed could publish a trigger event.
func TestTheTriggerUserFiresTriggersOnly(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	admin := s.Conn(t, bus.UserAdmin)
	sub, err := admin.SubscribeSync("ci.images.built")
	require.NoError(t, err)
	require.NoError(t, admin.Flush())
	v := &violations{}
	nc := s.Conn(t, bus.UserTrigger, nats.ErrorHandler(v.handler))
	require.NoError(t, nc.Publish("ci.images.built", []byte(`{"build":{"interval":"100ms"}}`)))
	_, err = sub.NextMsg(5 * time.Second)
	require.NoError(t, err, "the trigger event reached its subject")
	for _, subject := range []string{bus.Subject(events.TypeRunAnalyzed), bus.Subject(events.TypeExperimentSubmit),
		"$KV." + bus.BucketTokens + ".x", "$JS.API.STREAM.UPDATE." + bus.StreamTriggers, "$JS.API.CONSUMER.CREATE." + bus.StreamLifecycle,
		"_INBOX.x", "$SRV.PING", "$JSC.CI.x", "$MQTT.sess.x", bus.InboxPrefix(schedulerKey(t, s)) + ".abc"} {
		require.NoError(t, nc.Publish(subject, []byte(`{}`)))
		require.NoError(t, nc.Flush())
		testenv.Eventually(t, 5*time.Second, "refused: "+subject, func() bool { return v.has("publish", subject) })
	}
}

// schedulerKey is the scheduler's public key, from its seed.
func schedulerKey(t *testing.T, s testenv.SecureNATS) string {
	t.Helper()
	kp, err := bus.ReadSeed(s.Creds(string(events.ServiceScheduler)).NKeyFile)
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	return pub
}
