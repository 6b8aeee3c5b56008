package collector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// After a NATS server restart — with its store, then with an empty one —
// the collector is not ready while NATS is away (its /healthz reasons name
// the assignment consumer and the KV bucket); the bus declares the bucket,
// the stream and the consumer again; the collector keeps measuring the
// runs assigned before (an empty store lost their keys: it puts them back
// rather than forgetting them), is ready again, takes new assignments, and
// keeps sampling.
// Across the restart with the store, no interval is lost; across the one
// with an empty store, the claims and checkpoints are gone, so its sources
// start from a baseline: a hole no longer than the outage, explicit in the
// data.
func TestNATSRestartRecreatesBucketAndConsumer(t *testing.T) {
	const nodes = 3
	const interval = 500 * time.Millisecond
	st := testenv.Store(t)
	stopMerges(t, st)
	srv := testenv.NewRestartableNATS(t)
	in := startFleet(t, srv.URL(), st, newKeplerFarm(t), nodes, interval, withSpool(t), "c1")[0]
	pub := testenv.Bus(t, srv.URL(), "test")
	targets := podTargets(nodes)
	publishAssign(t, pub, "e1-r0000", targets[:1])
	testenv.Eventually(t, 30*time.Second, "ready and sampling", func() bool {
		return in.ready() == nil && countRows(t, st, "scope = 'pod'") >= 2
	})

	restart := func(empty bool) (downMs, upMs int64, notReady error) {
		downMs = time.Now().UnixMilli()
		srv.Stop()
		testenv.Eventually(t, 30*time.Second, "not ready while nats is down, for the consumer and the bucket", func() bool {
			notReady = in.ready()
			return notReady != nil && strings.Contains(notReady.Error(), "consumer energy-collector-c1: nats connection") &&
				strings.Contains(notReady.Error(), "kv_bucket: kv bucket "+in.cfg.Bucket+": heartbeat failed")
		})
		if empty {
			srv.StartEmpty()
		} else {
			srv.Start()
		}
		upMs = time.Now().UnixMilli()
		testenv.Eventually(t, 60*time.Second, "ready again", func() bool { return in.ready() == nil })
		return downMs, upMs, notReady
	}

	// Same store.
	down1, up1, why := restart(false)
	t.Logf("nats restarted with its store: not ready while down (%v); ready %s after it came back", why, time.Since(time.UnixMilli(up1)).Round(time.Millisecond))
	publishAssign(t, pub, "e1-r0001", targets[1:2])
	testenv.Eventually(t, 30*time.Second, "assignment after the restart honoured", func() bool {
		return countRows(t, st, "scope = 'pod' AND target_id = ?", targets[1].ID) >= 2
	})

	// Empty store: bucket, stream and consumer are gone.
	down2, up2, why := restart(true)
	t.Logf("nats restarted empty: not ready while down (%v); ready %s after it came back", why, time.Since(time.UnixMilli(up2)).Round(time.Millisecond))
	js, err := jetstream.New(pub.Conn())
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, "bucket recreated with the assignments put back", func() bool {
		kv, err := js.KeyValue(context.Background(), in.cfg.Bucket)
		if err != nil {
			return false
		}
		_, e0 := kv.Get(context.Background(), "run.e1-r0000")
		_, e1 := kv.Get(context.Background(), "run.e1-r0001")
		return e0 == nil && e1 == nil
	})
	testenv.Eventually(t, 30*time.Second, "runs assigned before the empty restart still measured", func() bool {
		return countRows(t, st, "scope = 'pod' AND target_id = ? AND ts_ms > ?", targets[0].ID, up2) >= 2 &&
			countRows(t, st, "scope = 'pod' AND target_id = ? AND ts_ms > ?", targets[1].ID, up2) >= 2
	})
	publishAssign(t, pub, "e1-r0002", targets[2:3])
	testenv.Eventually(t, 30*time.Second, "assignment after the empty restart honoured", func() bool {
		return countRows(t, st, "scope = 'pod' AND target_id = ?", targets[2].ID) >= 2
	})
	afterMs := time.Now().UnixMilli()
	testenv.Eventually(t, 30*time.Second, "every node sampled after the restarts", func() bool {
		return minPerNode(t, st, "scope = 'node' AND ts_ms > ?", nodes, afterMs) >= 2
	})
	in.stop(t)

	requireOutageHoles(t, st, interval, down2, up2,
		fmt.Sprintf("the empty-store restart (the one with the store at %d–%d loses nothing)", down1, up1))
}

// requireOutageHoles checks the stored series around an outage of NATS
// with an empty store from downMs to upMs: no interval counted twice, no
// hole before the outage, and none longer than it plus a re-baseline. The
// hole runs from the last rows committed before the outage (up to a commit
// interval and a reading earlier) to the baseline reading after the bucket
// was recreated and the claim taken again (a heartbeat, a reconcile and an
// interval later): bounded generously, the machine is shared.
func requireOutageHoles(t *testing.T, st *store.Store, interval time.Duration, downMs, upMs int64, outage string) {
	t.Helper()
	cov := checkCoverage(t, st)
	var longest int64
	for _, g := range cov.holes {
		longest = max(longest, g.toMs-g.fromMs)
	}
	t.Logf("rows %d (written twice: %d); holes %d (%.0f ms, longest %d ms; outage %d ms); overlaps %d",
		cov.rows, cov.duplicates, len(cov.holes), cov.holeMs(), longest, upMs-downMs, len(cov.overlaps))
	require.Empty(t, cov.overlaps, "no interval counted twice")
	bound := upMs - downMs + (6*interval + time.Second).Milliseconds()
	for _, g := range cov.holes {
		require.Greater(t, g.toMs, downMs, "no hole before %s: %+v", outage, g)
		require.LessOrEqual(t, g.toMs-g.fromMs, bound, "a hole no longer than the outage and a re-baseline: %+v", g)
	}
}

// withSpool gives each collector a spool directory of its own.
func withSpool(tb testing.TB) func(*collector.Config) {
	return func(c *collector.Config) { c.SpoolDir = tb.TempDir() }
}

// Two collectors sharing four Kepler sources across a NATS restart with an
// empty store: both are not ready while it is down and ready after; both
// put the lost assignment back (one creates the key, the other finds it
// there); every node is measured for the run assigned before; and no
// interval is counted twice (the claims, lost too, are taken again with a
// compare-and-set), while the holes stay bounded as with one collector.
func TestNATSEmptyRestartWithTwoCollectors(t *testing.T) {
	const nodes = 4 // rendezvous hashing gives c0 and c1 two each
	const interval = 500 * time.Millisecond
	st := testenv.Store(t)
	stopMerges(t, st)
	srv := testenv.NewRestartableNATS(t)
	ins := startFleet(t, srv.URL(), st, newKeplerFarm(t), nodes, interval, withSpool(t), "c0", "c1")
	pub := testenv.Bus(t, srv.URL(), "test")
	publishAssign(t, pub, "e1-r0000", podTargets(nodes))
	allReady := func() bool {
		for _, in := range ins {
			if in.ready() != nil {
				return false
			}
		}
		return true
	}
	testenv.Eventually(t, 30*time.Second, "both ready, sharing the sources, every pod measured", func() bool {
		return allReady() && ins[0].owned(t) > 0 && ins[1].owned(t) > 0 && minPerNode(t, st, "scope = 'pod'", nodes) >= 2
	})

	downMs := time.Now().UnixMilli()
	srv.Stop()
	testenv.Eventually(t, 30*time.Second, "neither ready while nats is down", func() bool {
		return ins[0].ready() != nil && ins[1].ready() != nil
	})
	srv.StartEmpty()
	upMs := time.Now().UnixMilli()
	testenv.Eventually(t, 60*time.Second, "both ready again", allReady)
	t.Logf("ready %s after nats came back empty", time.Since(time.UnixMilli(upMs)).Round(time.Millisecond))
	js, err := jetstream.New(pub.Conn())
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, "assignment put back", func() bool {
		kv, err := js.KeyValue(context.Background(), ins[0].cfg.Bucket)
		if err != nil {
			return false
		}
		_, err = kv.Get(context.Background(), "run.e1-r0000")
		return err == nil
	})
	testenv.Eventually(t, 30*time.Second, "every pod measured after the restart, both sharing again", func() bool {
		return minPerNode(t, st, "scope = 'pod' AND ts_ms > ?", nodes, upMs) >= 2 && ins[0].owned(t) > 0 && ins[1].owned(t) > 0
	})
	t.Logf("sources owned after the restart: c0 %.0f, c1 %.0f", ins[0].owned(t), ins[1].owned(t))
	for _, in := range ins {
		in.stop(t)
	}

	requireOutageHoles(t, st, interval, downMs, upMs, "the restart")
}
