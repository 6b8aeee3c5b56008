package loadgen_test

import (
	"context"
	"encoding/json"
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
// dead. Its /healthz (the bus's Check and the generator's) reports not
// ready meanwhile; the bus declares again what is gone (the KV buckets, in
// file storage, the command consumer; on an empty store the streams too)
// and restarts the watches; the generator is ready again and serves loads:
// the one running across the outage finishes with its full count — on an
// empty store too, its lost plan written back by the leader — and a new
// one runs.
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
			if fresh {
				// The plan vanished with the store. The leader writes it
				// back while the load runs — not only with its summary —
				// so the load can still be stopped and a restarted
				// instance finds its share.
				var finished bool
				testenv.Eventually(t, 10*time.Second, "plan written back", func() bool {
					kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketRuns)
					if err != nil {
						return false
					}
					ent, err := kv.Get(context.Background(), "plan.across")
					if err != nil {
						return false
					}
					var p struct {
						Finished bool `json:"finished"`
					}
					require.NoError(t, json.Unmarshal(ent.Value(), &p))
					finished = p.Finished
					return true
				})
				t.Logf("plan written back %s after NATS came back", time.Since(upAt).Round(time.Millisecond))
				require.False(t, finished, "written back while the load runs, not only with its summary")
			}

			// The load running across the outage ends with its summary, on
			// an empty store too (its plan is written again by the leader),
			// with the full schedule in the topic, once: the outage leaves
			// no hole and nothing produced twice. What the topic lacks may
			// only be records still due when the schedule ended after this
			// starved process stalled in its last moments (the schedule
			// stops exactly at its end), and the account counts them as
			// missed. (Asserting exactly 4,000 delivered failed once at a
			// load average of 15 with 3,872, and in 10 of 52 runs under
			// -race with GOMAXPROCS=1, 4–522 short: each time that tail,
			// counted missed.)
			fin := e.waitFinished(t, "across", 30*time.Second)
			require.False(t, fin.Failed, fin.Reason)
			require.True(t, fin.DeliveredFromBroker)
			t.Logf("the load across the outage: %+v", fin)
			require.Zero(t, fin.Takeovers, "nobody died: the outage held judgements off")
			extra, where := completeness(t, e.coverage(t, fin, time.Second), fin, 500, 8, nil, 0)
			require.Zero(t, extra, "produced twice in periods %v", where)
			require.Equal(t, int64(4000)-fin.RecordsMissed, fin.RecordsDelivered)
			requireEndTail(t, fin, 500)

			e.start("after", events.Workload{Sensors: 200, RatePerSec: 200}, 2*time.Second)
			fin = e.waitFinished(t, "after", 30*time.Second)
			require.False(t, fin.Failed, fin.Reason)
			t.Logf("the load after the restart: %+v", fin)
			extra, where = completeness(t, e.coverageFrom(t, fin, time.Second, fin.StartMs), fin, 200, 2, nil, 0)
			require.Zero(t, extra, "produced twice in periods %v", where)
			require.Equal(t, int64(400)-fin.RecordsMissed, fin.RecordsDelivered)
			requireEndTail(t, fin, 200)
			for _, b := range []string{loadgen.BucketMembers, loadgen.BucketRuns} {
				_, err := e.bus.JetStream().KeyValue(context.Background(), b)
				require.NoError(t, err, b)
			}
			_, err = e.bus.JetStream().Consumer(context.Background(), bus.StreamLifecycle, bus.ConsumerLoadGenerator.Durable)
			require.NoError(t, err)
		})
	}
}

// requireEndTail: what a load missed is at most the last second's records
// (perSecond), the tail a stall at the schedule's very end leaves, and is
// said in its reason.
func requireEndTail(t *testing.T, fin events.LoadFinished, perSecond int64) {
	t.Helper()
	require.LessOrEqual(t, fin.RecordsMissed, perSecond, "at most the last second's records missed: %s", fin.Reason)
	if fin.RecordsMissed > 0 {
		require.Contains(t, fin.Reason, "records due were never produced", "missed records are said")
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

// TestNATSLosesStoreAfterAShareIsDone: NATS comes back with an empty store
// after an instance finished its share but before the leader could sum the
// load up — it waits for a second participant (a member the test fakes by
// heartbeating, which never produces). The instance puts its final
// checkpoint back, so once that member is dead the load is summed up at
// once with the instance's count, instead of failing at the load's
// deadline as if the instance had never finished.
func TestNATSLosesStoreAfterAShareIsDone(t *testing.T) {
	srv := startNATS(t)
	e := newEnvOn(t, srv.url())
	_, reg := e.generator(testConfig("lg-1"), loadgen.Deps{})

	// The ghost sorts after lg-1, so lg-1 leads.
	ghostCtx, stopGhost := context.WithCancel(context.Background())
	defer stopGhost()
	js := e.bus.JetStream()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ghostCtx.Done():
				return
			case <-t.C:
			}
			if kv, err := js.KeyValue(ghostCtx, loadgen.BucketMembers); err == nil {
				_, _ = kv.Put(ghostCtx, "zz-ghost", []byte(`{"instance":"zz-ghost"}`))
			}
		}
	}()
	testenv.Eventually(t, 10*time.Second, "lg-1 sees the ghost", func() bool { return gauge(t, reg, "greenflow_load_generator_members") == 2 })

	e.start("held", events.Workload{Sensors: 200, RatePerSec: 200}, 2*time.Second)
	runs, err := js.KeyValue(context.Background(), loadgen.BucketRuns)
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, "plan written", func() bool {
		_, err := runs.Get(context.Background(), "plan.held")
		return err == nil
	})
	_, owners := e.plan(t, "held")
	require.Equal(t, map[string]int{"lg-1": 100, "zz-ghost": 100}, owners)
	// The ghost says it prepared its share, so the leader starts the load.
	_, err = runs.Put(context.Background(), "status.held.zz-ghost", []byte(`{"instance":"zz-ghost","prepared":true}`))
	require.NoError(t, err)
	done := func(kv jetstream.KeyValue) bool {
		ent, err := kv.Get(context.Background(), "status.held.lg-1")
		if err != nil {
			return false
		}
		var st struct {
			Done bool  `json:"done"`
			Sent int64 `json:"sent"`
		}
		require.NoError(t, json.Unmarshal(ent.Value(), &st))
		return st.Done && st.Sent == 200
	}
	testenv.Eventually(t, 15*time.Second, "lg-1's share done", func() bool { return done(runs) })
	require.Zero(t, e.finishedCount("held"), "the leader waits for the ghost")

	stopGhost()
	srv.stop()
	downAt := time.Now()
	srv.start(true)
	upAt := time.Now()
	e.connect(downAt.Add(-10 * time.Second))
	testenv.Eventually(t, 15*time.Second, "lg-1's final checkpoint put back", func() bool {
		kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketRuns)
		return err == nil && done(kv)
	})
	t.Logf("final checkpoint put back %s after NATS came back", time.Since(upAt).Round(time.Millisecond))

	fin := e.waitFinished(t, "held", 30*time.Second)
	t.Logf("summary %s after NATS came back: %+v", time.Since(upAt).Round(time.Millisecond), fin)
	require.False(t, fin.Failed, fin.Reason)
	require.Equal(t, int64(200), fin.RecordsSent, "lg-1's share, from its final checkpoint")
	require.Equal(t, int64(200), fin.RecordsDelivered)
	require.Equal(t, int64(200), fin.RecordsMissed, "the ghost's share, never produced")
	require.Contains(t, fin.Reason, "zz-ghost died without a report")
}
