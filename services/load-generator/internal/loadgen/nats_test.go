package loadgen_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// restartableNATS is an embedded NATS server that can be shut down and
// started again on the same port.
type restartableNATS struct {
	t    *testing.T
	port int
	dir  string
	ns   *server.Server
}

func startNATS(t *testing.T) *restartableNATS {
	t.Helper()
	r := &restartableNATS{t: t, dir: t.TempDir()}
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: r.dir})
	require.NoError(t, err)
	r.ns, r.port = ns, ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { r.ns.Shutdown() })
	return r
}

func (r *restartableNATS) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.port) }

func (r *restartableNATS) stop() {
	r.ns.Shutdown()
	r.ns.WaitForShutdown()
}

// start starts the server again on the same port, with the same store or
// (fresh) an empty one.
func (r *restartableNATS) start(fresh bool) {
	r.t.Helper()
	if fresh {
		r.dir = r.t.TempDir()
	}
	var err error
	testenv.Eventually(r.t, 10*time.Second, "nats listening again", func() bool {
		r.ns, err = natsembed.Start(natsembed.Options{Port: r.port, StoreDir: r.dir})
		return err == nil
	})
}

// TestNATSRestart: the NATS server goes away for a few seconds and comes
// back on the same port — with its store, or with an empty one. Two
// instances share a load across the outage; neither takes the other for
// dead. The generator reports not ready meanwhile, recreates what it needs (its KV
// buckets, in file storage, and its consumer; on an empty store the streams
// too), is ready again, and serves loads: the one running across the outage
// (same store) finishes, and a new one runs.
func TestNATSRestart(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		name := map[bool]string{false: "same store", true: "empty store"}[fresh]
		t.Run(name, func(t *testing.T) {
			srv := startNATS(t)
			e := newEnvOn(t, srv.url())
			// Two instances with the default membership TTL: an outage
			// must not look like their deaths.
			cfg1, cfg2 := testConfig("lg-1"), testConfig("lg-2")
			cfg1.MemberTTL, cfg2.MemberTTL = loadgen.Default().MemberTTL, loadgen.Default().MemberTTL
			g := e.checkedGenerator(cfg1)
			e.generator(cfg2, loadgen.Deps{})
			e.waitMembers(t, 2)
			testenv.Eventually(t, 10*time.Second, "ready", func() bool { return g.Check() == nil })
			kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketMembers)
			require.NoError(t, err)
			st, err := kv.Status(context.Background())
			require.NoError(t, err)
			require.Equal(t, jetstream.FileStorage, st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage, "membership survives a NATS restart")

			e.start("across", events.Workload{Sensors: 500, RatePerSec: 500}, 8*time.Second)
			testenv.Eventually(t, 10*time.Second, "load running", func() bool { return len(e.progressOf("across", "")) >= 2 })
			srv.stop()
			downAt := time.Now()
			testenv.Eventually(t, 10*time.Second, "not ready while NATS is down", func() bool { return g.Check() != nil })
			t.Logf("not ready %s after NATS went down: %v", time.Since(downAt).Round(time.Millisecond), g.Check())
			testenv.Eventually(t, 10*time.Second, "3 s of outage", func() bool { return time.Since(downAt) >= 3*time.Second })
			srv.start(fresh)
			upAt := time.Now()
			e.connect(downAt.Add(-10 * time.Second))
			testenv.Eventually(t, 20*time.Second, "ready again", func() bool { return g.Check() == nil })
			t.Logf("ready %s after NATS came back", time.Since(upAt).Round(time.Millisecond))

			// The load running across the outage ends with its summary, on
			// an empty store too (its plan is written again by the leader).
			fin := e.waitFinished(t, "across", 30*time.Second)
			require.False(t, fin.Failed, fin.Reason)
			require.True(t, fin.DeliveredFromBroker)
			t.Logf("the load across the outage: %+v", fin)
			require.Equal(t, int64(4000), fin.RecordsDelivered)
			require.Zero(t, fin.Takeovers, "nobody died: the outage held judgements off")
			require.Zero(t, fin.RecordsMissed)

			e.start("after", events.Workload{Sensors: 200, RatePerSec: 200}, 2*time.Second)
			fin = e.waitFinished(t, "after", 30*time.Second)
			require.False(t, fin.Failed, fin.Reason)
			t.Logf("the load after the restart: %+v", fin)
			require.Equal(t, int64(400), fin.RecordsDelivered)
			for _, b := range []string{loadgen.BucketMembers, loadgen.BucketRuns} {
				_, err := e.bus.JetStream().KeyValue(context.Background(), b)
				require.NoError(t, err, b)
			}
			_, err = e.bus.JetStream().Consumer(context.Background(), bus.StreamLifecycle, bus.ConsumerLoadGenerator.Durable)
			require.NoError(t, err)
		})
	}
}

// TestMembershipBucketMovesToFileStorage: a membership bucket an older
// version left in memory storage is replaced by one in file storage.
func TestMembershipBucketMovesToFileStorage(t *testing.T) {
	e := newEnv(t)
	_, err := e.bus.JetStream().CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: loadgen.BucketMembers,
		TTL: 3 * time.Second, History: 1, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	e.generator(testConfig("lg-1"), loadgen.Deps{})
	e.waitMembers(t, 1)
	kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketMembers)
	require.NoError(t, err)
	st, err := kv.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, jetstream.FileStorage, st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage)
	e.start("moved", events.Workload{Sensors: 100, RatePerSec: 100}, time.Second)
	fin := e.waitFinished(t, "moved", 15*time.Second)
	require.False(t, fin.Failed, fin.Reason)
}
