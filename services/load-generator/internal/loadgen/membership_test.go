package loadgen

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// heartbeatEntry is a membership put the server stamped at created.
type heartbeatEntry struct {
	key     string
	created time.Time
}

func (h heartbeatEntry) Bucket() string                  { return BucketMembers }
func (h heartbeatEntry) Key() string                     { return h.key }
func (h heartbeatEntry) Value() []byte                   { return nil }
func (h heartbeatEntry) Revision() uint64                { return 1 }
func (h heartbeatEntry) Created() time.Time              { return h.created }
func (h heartbeatEntry) Delta() uint64                   { return 0 }
func (h heartbeatEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// lostMember is what a bus watch of the membership bucket delivers for key
// when NATS comes back with an empty store and the bus declares the bucket
// again (bus.KeyLost).
func lostMember(t *testing.T, key string) jetstream.KeyValueEntry {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown() })
	port := ns.Addr().(*net.TCPAddr).Port
	b := testenv.Bus(t, fmt.Sprintf("nats://127.0.0.1:%d", port), "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.KV(ctx, BucketMembers)
	require.NoError(t, err)
	_, err = kv.Put(ctx, key, []byte(`{}`))
	require.NoError(t, err)
	w, err := kv.WatchAll(ctx)
	require.NoError(t, err)
	for e := range w.Updates() {
		if e == nil {
			break // the current entries are in
		}
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	testenv.Eventually(t, 10*time.Second, "nats listening again", func() bool {
		ns, err = natsembed.Start(natsembed.Options{Port: port, StoreDir: t.TempDir()})
		return err == nil
	})
	for e := range w.Updates() {
		if e != nil && bus.KeyLost(e) && e.Key() == key {
			return e
		}
	}
	t.Fatalf("the watch ended without reporting %s lost", key)
	return nil
}

// TestALostMembershipBucketHoldsJudgementsOff: when NATS comes back with
// an empty store, nobody can heartbeat until the bus has declared the
// membership bucket again — which took longer than a TTL after the
// reconnect on a loaded machine, so the hold the reconnect started had run
// out: the first heartbeat into the new bucket made every other instance
// look dead at once, and a live one's ranges were taken over from its lost
// checkpoint, the schedule's start (1,169 records produced twice, 825
// missed of 4,000 in a run of TestNATSRestart's load). The bucket seen lost
// holds judgements off for a TTL from then.
func TestALostMembershipBucketHoldsJudgementsOff(t *testing.T) {
	lost := lostMember(t, "lg-2")
	const ttl = 750 * time.Millisecond
	clk := testingclock.NewFakePassiveClock(time.Now())
	m := newMembership("lg-1", ttl, clk, zap.NewNop())
	server := time.Unix(1_800_000_000, 0)
	m.start()
	m.apply(heartbeatEntry{"lg-1", server})
	m.apply(heartbeatEntry{"lg-2", server})
	m.apply(nil)
	beat := func(d time.Duration) {
		clk.SetTime(clk.Now().Add(d))
		m.beat(clk.Now())
	}
	beat(ttl)
	alive, stable := m.view()
	require.Equal(t, map[string]bool{"lg-1": true, "lg-2": true}, alive)
	require.True(t, stable)

	// NATS goes away and comes back empty; the reconnect's hold runs out
	// before the bus has declared the bucket again.
	m.hold()
	beat(2 * ttl)
	m.apply(lost)
	m.apply(heartbeatEntry{"lg-1", server.Add(4 * time.Second)}) // first into the new bucket
	alive, stable = m.view()
	require.Equal(t, map[string]bool{"lg-1": true}, alive, "lg-2 has not heartbeated into the new bucket yet")
	require.False(t, stable, "nobody could heartbeat before the bucket was back: no judgement yet")
	beat(ttl / 2)
	m.apply(heartbeatEntry{"lg-2", server.Add(4*time.Second + 200*time.Millisecond)})
	beat(ttl / 2)
	alive, stable = m.view()
	require.Equal(t, map[string]bool{"lg-1": true, "lg-2": true}, alive)
	require.True(t, stable, "a TTL after the bucket came back")
}
