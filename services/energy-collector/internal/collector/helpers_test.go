package collector_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// podTargets is one pod target per node.
func podTargets(n int) []events.Target { return podTargetsPer(n, 1) }

// podTargetsPer is pods pod targets on each of n nodes, as the farm with
// that many pods per node publishes them.
func podTargetsPer(n, pods int) []events.Target {
	var out []events.Target
	for i := range n {
		for p := range pods {
			name := "sut-" + nodeName(i)
			if p > 0 {
				name = fmt.Sprintf("sut-%s-%d", nodeName(i), p)
			}
			out = append(out, events.Target{ID: "pod/" + nodeName(i) + "/" + name, Kind: "pod", Node: nodeName(i), Role: "sut", Pod: name, Namespace: "gf"})
		}
	}
	return out
}

func testConfig(instance string, interval time.Duration) collector.Config {
	c := collector.Default()
	c.Instance, c.Node = instance, "host-"+instance
	c.Interval, c.FlushInterval = interval, 100*time.Millisecond
	c.BatchSize, c.MaxBuffered = 2000, 200_000
	c.Source = collector.KindModel
	return c
}

// instance is a running collector with its own NATS connection.
type instance struct {
	cfg collector.Config
	c   *collector.Collector
	b   *bus.Bus
	reg *prometheus.Registry
	run *testenv.Running // nil unless started and not stopped
}

// startCollector builds a collector and runs it until stop or the end of
// the test.
func startCollector(tb testing.TB, natsURL string, cfg collector.Config, st collector.Store) *instance {
	tb.Helper()
	in := newCollector(tb, natsURL, cfg, st)
	in.start(tb)
	return in
}

// newCollector builds a collector on a NATS connection of its own, which
// expects the collector's consumers as svcmain and the dev stack do; it
// does not run it yet.
func newCollector(tb testing.TB, natsURL string, cfg collector.Config, st collector.Store) *instance {
	tb.Helper()
	return newCollectorOn(tb, natsURL, cfg, st, nil)
}

// newCollectorOn is newCollector on clk (nil: the real clock).
func newCollectorOn(tb testing.TB, natsURL string, cfg collector.Config, st collector.Store, clk clock.WithTicker) *instance {
	tb.Helper()
	b := testenv.Bus(tb, natsURL, "energy-collector")
	b.Expect(bus.ExpectedConsumers("energy-collector")...)
	reg := prometheus.NewRegistry()
	c, err := collector.New(cfg, collector.Deps{Bus: b, Store: st, Logger: testenv.Logger(tb), Registry: reg, Clock: clk})
	require.NoError(tb, err)
	return &instance{cfg: cfg, c: c, b: b, reg: reg}
}

// start runs the collector until stop or the end of the test.
func (in *instance) start(tb testing.TB) {
	in.run = testenv.Go(tb, context.Background(), in.c.Run)
	tb.Cleanup(func() { in.stop(tb) })
}

// startFleet starts one collector per name on natsURL, all sharing the
// farm's first n sources: testConfig(name, interval), then tune when given.
func startFleet(tb testing.TB, natsURL string, st collector.Store, farm *keplerFarm, n int, interval time.Duration,
	tune func(*collector.Config), names ...string) []*instance {
	tb.Helper()
	var ins []*instance
	for _, name := range names {
		cfg := testConfig(name, interval)
		cfg.Sources = farm.sources(n)
		if tune != nil {
			tune(&cfg)
		}
		ins = append(ins, startCollector(tb, natsURL, cfg, st))
	}
	return ins
}

// ready is what the service's /healthz asks: the bus (connection,
// consumers, streams and buckets) and the collector.
func (in *instance) ready() error { return errors.Join(in.b.Check(), in.c.Check()) }

// stop cancels the collector and waits for it to drain.
func (in *instance) stop(tb testing.TB) {
	tb.Helper()
	if in.run == nil {
		return
	}
	require.NoError(tb, in.run.Stop(30*time.Second, "collector"))
	in.run = nil
}

// owned is how many shared sources the instance samples now.
func (in *instance) owned(tb testing.TB) float64 {
	tb.Helper()
	mfs, err := in.reg.Gather()
	require.NoError(tb, err)
	for _, mf := range mfs {
		if mf.GetName() == collector.MetricSourcesOwned && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// gaugeNoLabel returns the value of an unlabelled gauge or counter.
func (in *instance) gaugeNoLabel(tb testing.TB, name string) (float64, bool) {
	tb.Helper()
	mfs, err := in.reg.Gather()
	require.NoError(tb, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue() + mf.GetMetric()[0].GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// gauge returns the value of metric name with label source=src.
func (in *instance) gauge(tb testing.TB, name, src string) (float64, bool) {
	tb.Helper()
	mfs, err := in.reg.Gather()
	require.NoError(tb, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == src {
					return m.GetGauge().GetValue() + m.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// publishAssign assigns targets of run runID (experiment e1) to the
// collectors, measured as the collectors' own meters say.
func publishAssign(tb testing.TB, b *bus.Bus, runID string, targets []events.Target) {
	tb.Helper()
	publishAssignMeters(tb, b, runID, targets, nil)
}

// assignProcess assigns run runID one process target: the system under
// test, PID 100 of node's fake /proc tree.
func assignProcess(tb testing.TB, b *bus.Bus, runID, targetID, node string) {
	tb.Helper()
	publishAssign(tb, b, runID, []events.Target{{ID: targetID, Kind: "process", Node: node, Role: "sut", PID: 100}})
}

// publishAssignMeters assigns targets with the run's meters m (nil: the
// collectors' own).
func publishAssignMeters(tb testing.TB, b *bus.Bus, runID string, targets []events.Target, m *events.CollectMeters) {
	tb.Helper()
	require.NoError(tb, b.Publish(context.Background(), events.CollectAssign{ExperimentID: "e1", RunID: runID, Targets: targets, Meters: m}, ""))
}

func publishRelease(tb testing.TB, b *bus.Bus, runID string) {
	tb.Helper()
	require.NoError(tb, b.Publish(context.Background(), events.CollectRelease{ExperimentID: "e1", RunID: runID}, ""))
}

// failingStore fails every write while down, like a ClickHouse that is
// unreachable, and passes the rest to the real store.
type failingStore struct {
	*store.Store
	mu       sync.Mutex
	down     bool
	failures int
}

func (f *failingStore) setDown(d bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = d
}

func (f *failingStore) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.failures++
		return errors.New("dial tcp 127.0.0.1:9000: connection refused")
	}
	return nil
}

func (f *failingStore) InsertSamples(ctx context.Context, s []store.Sample) error {
	return failOr(ctx, f, s, f.Store.InsertSamples)
}

func (f *failingStore) InsertRunMetrics(ctx context.Context, m []store.RunMetric) error {
	return failOr(ctx, f, m, f.Store.InsertRunMetrics)
}

// failOr fails while f is down, else inserts rows.
func failOr[T any](ctx context.Context, f *failingStore, rows []T, insert func(context.Context, []T) error) error {
	if err := f.fail(); err != nil {
		return err
	}
	return insert(ctx, rows)
}

func (f *failingStore) InsertGaps(ctx context.Context, g []store.Gap) error {
	return failOr(ctx, f, g, f.Store.InsertGaps)
}

func (f *failingStore) InsertRunMeters(ctx context.Context, m []store.RunMeter) error {
	return failOr(ctx, f, m, f.Store.InsertRunMeters)
}

// row is one stored sample, as the tests look at it.
type row struct {
	TsMs       int64
	Node       string
	Scope      string
	Target     string
	Zone       string
	DeltaJ     float64
	EnergyJ    float64
	IntervalMs uint32
	Collector  string
}

// readRows reads every stored sample, ordered by series and time.
func readRows(tb testing.TB, st *store.Store) []row {
	tb.Helper()
	q, err := st.Conn().Query(context.Background(), `SELECT ts_ms, node, scope, target_id, zone, delta_j, energy_j, interval_ms, collector
		FROM samples ORDER BY node, scope, target_id, zone, ts_ms`)
	require.NoError(tb, err)
	defer q.Close()
	var out []row
	for q.Next() {
		var r row
		require.NoError(tb, q.Scan(&r.TsMs, &r.Node, &r.Scope, &r.Target, &r.Zone, &r.DeltaJ, &r.EnergyJ, &r.IntervalMs, &r.Collector))
		out = append(out, r)
	}
	require.NoError(tb, q.Err())
	return out
}

// countRows counts stored samples matching a WHERE clause.
func countRows(tb testing.TB, st *store.Store, where string, args ...any) uint64 {
	tb.Helper()
	var n uint64
	require.NoError(tb, st.Conn().QueryRow(context.Background(), "SELECT count() FROM samples WHERE "+where, args...).Scan(&n))
	return n
}

func t0ctx() context.Context { return context.Background() }

// storedRows reads until read returns at least n rows and returns them:
// what the collectors write reaches ClickHouse a flush later.
func storedRows[T any](tb testing.TB, within time.Duration, what string, n int, read func() ([]T, error)) []T {
	tb.Helper()
	var rows []T
	testenv.Eventually(tb, within, what, func() bool {
		var err error
		rows, err = read()
		require.NoError(tb, err)
		return len(rows) >= n
	})
	return rows
}
