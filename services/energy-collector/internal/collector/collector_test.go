package collector_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*collector.Config)
		want   []string
	}{
		{"defaults", func(*collector.Config) {}, nil},
		{"bad basics", func(c *collector.Config) {
			c.Instance, c.Interval, c.Source, c.BatchSize = "", time.Millisecond, "gpu", 0
		}, []string{"energy-collector.instance: required", "energy-collector.interval", `energy-collector.source: got "gpu"`, "energy-collector.batchSize"}},
		{"bad sources", func(c *collector.Config) {
			c.Sources = []collector.SourceConfig{
				{ID: "a", Kind: collector.KindKepler, Node: "n1"},
				{ID: "a", Kind: collector.KindPromQL, Node: "n2", URL: "http://prom"},
				{Kind: collector.KindScaphandre, URL: "http://x"},
				{Kind: "ipmi", Node: "n3"},
				{Kind: collector.KindKwollect, Node: "taurus-7", Delay: -time.Second},
			}
		}, []string{"sources[0].url: required for kepler", `sources[1].id: "a" already used by sources[0]`, "sources[1].nodeQuery: required",
			"sources[2].node: required", `sources[3].kind: got "ipmi"`, "sources[4].site: required for kwollect", "sources[4].delay: got -1s"}},
		{"lease shorter than heartbeat", func(c *collector.Config) { c.Heartbeat, c.LeaseTTL = time.Second, time.Second }, []string{"heartbeat < leaseTTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := collector.Default()
			c.Instance, c.Node = "c1", "n1"
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// Bad input — a malformed exposition, an exporter that hangs, a powercap
// tree that is not there — marks that source unhealthy with the reason,
// and the others keep being sampled.
func TestUnhealthySourcesDoNotStopTheOthers(t *testing.T) {
	st := testenv.Store(t)
	farm := newKeplerFarm(t)
	farm.setBad("node-02", "hang")
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.Sources = farm.sources(3)
	for i := range cfg.Sources {
		cfg.Sources[i].Pinned = true
	}
	cfg.Sources = append(cfg.Sources, collector.SourceConfig{ID: "rapl/here", Kind: collector.KindRAPL, Node: "node-03",
		PowercapRoot: filepath.Join(t.TempDir(), "no-powercap")})
	in := startCollector(t, testenv.NATS(t), cfg, st)
	testenv.Eventually(t, 20*time.Second, "node-01 sampled", func() bool {
		return countRows(t, st, "node = 'node-01' AND scope = 'node'") >= 2
	})
	farm.setBad("node-01", "malformed")

	testenv.Eventually(t, 20*time.Second, "good source sampled, bad ones unhealthy", func() bool {
		h := in.c.SourceHealth()
		return countRows(t, st, "node = 'node-00' AND scope = 'node'") >= 3 &&
			h["kepler/node-00"].Healthy && len(h) == 4 && !h["kepler/node-01"].Healthy && !h["kepler/node-02"].Healthy && !h["rapl/here"].Healthy
	})
	h := in.c.SourceHealth()
	require.Contains(t, h["kepler/node-01"].Reason, "parse exposition")
	require.Contains(t, h["kepler/node-02"].Reason, "context deadline exceeded")
	require.Contains(t, h["rapl/here"].Reason, "open powercap root")
	for src, want := range map[string]float64{"kepler/node-00": 1, "kepler/node-01": 0, "kepler/node-02": 0, "rapl/here": 0} {
		v, ok := in.gauge(t, collector.MetricSourceHealthy, src)
		require.True(t, ok, src)
		require.Equal(t, want, v, src)
	}

	// The exporter recovers; its first interval covers the whole outage
	// (at least two 200 ms intervals).
	farm.setBad("node-01", "")
	testenv.Eventually(t, 20*time.Second, "recovered source sampled", func() bool {
		return in.c.SourceHealth()["kepler/node-01"].Healthy && countRows(t, st, "node = 'node-01' AND scope = 'node' AND interval_ms > 300") >= 1
	})
	in.stop(t)
}

// While ClickHouse is unreachable, samples wait in the spool; when it comes
// back they are all written — no interval missing, none twice — and the
// collector's CPU time is recorded as a run metric of the assigned run.
func TestSamplesSurviveClickHouseOutageAndOverheadIsRecorded(t *testing.T) {
	st := &failingStore{Store: testenv.Store(t)}
	farm := newKeplerFarm(t)
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.Sources = farm.sources(2)
	cfg.SpoolDir = t.TempDir()
	in := startCollector(t, testenv.NATS(t), cfg, st)
	publishAssign(t, in.b, "e1-r0007", podTargets(2))

	testenv.Eventually(t, 20*time.Second, "samples flowing", func() bool { return countRows(t, st.Store, "scope = 'pod'") >= 2 })
	st.setDown(true)
	testenv.Eventually(t, 20*time.Second, "samples spooled", func() bool { return in.c.BacklogRows() >= 50 })
	entries, err := os.ReadDir(cfg.SpoolDir)
	require.NoError(t, err)
	require.Greater(t, len(entries), 1, "batches on disk")
	before := countRows(t, st.Store, "1")
	st.setDown(false)
	testenv.Eventually(t, 20*time.Second, "spool written", func() bool { return in.c.BacklogRows() == 0 && countRows(t, st.Store, "1") > before+50 })
	in.stop(t)

	// Contiguity is exact; the step bound only catches a source that
	// stalled, generously (a loaded machine delays scrapes past their
	// timeout, and the next reading then covers the missed one).
	c := checkSeries(t, st.Store, 2, cfg.Interval, 2*cfg.Interval+2*time.Second)
	require.Positive(t, c.rows)

	q, err := st.Conn().Query(context.Background(), "SELECT ts_ms, labels, value FROM run_metrics WHERE run_id = 'e1-r0007' AND name = ? ORDER BY ts_ms", collector.MetricCollectorCPU)
	require.NoError(t, err)
	defer q.Close()
	var points int
	var last float64
	for q.Next() {
		var ts int64
		var labels string
		var v float64
		require.NoError(t, q.Scan(&ts, &labels, &v))
		require.JSONEq(t, `{"instance":"c1"}`, labels)
		require.GreaterOrEqual(t, v, last, "cumulative")
		last = v
		points++
	}
	require.NoError(t, q.Err())
	require.Greater(t, points, 5)
	require.Positive(t, last)
}

// A local source attributes to process trees from /proc, and a restarted
// instance (same name, its durable consumer past the assignment) still
// knows the run's targets from the KV bucket.
func TestLocalProcessTargetsAndAssignmentsSurviveRestart(t *testing.T) {
	st := testenv.Store(t)
	url := testenv.NATS(t)
	proc := t.TempDir()
	writeProc(t, proc, 1000, 10000, map[int][2]int{1: {0, 10}, 100: {1, 50}, 101: {100, 20}, 200: {1, 5}})
	cfg := testConfig("c1", 200*time.Millisecond)
	cfg.ProcRoot = proc
	in := startCollector(t, url, cfg, st)
	const target = "process/e1-r0001/sut-0"
	assignProcess(t, in.b, "e1-r0001", target, cfg.Node)

	// Advance the fake node: the tree of 100 keeps using CPU.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		busy, total, ticks := 1000, 10000, 50
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			busy, total, ticks = busy+20, total+100, ticks+5
			writeProc(t, proc, busy, total, map[int][2]int{1: {0, 10}, 100: {1, ticks}, 101: {100, 20 + ticks}, 200: {1, 5}})
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	testenv.Eventually(t, 20*time.Second, "process target attributed", func() bool {
		return countRows(t, st, "scope = 'process' AND target_id = ? AND delta_j > 0", target) >= 2
	})
	in.stop(t)
	n := countRows(t, st, "scope = 'process'")

	again := startCollector(t, url, cfg, st)
	testenv.Eventually(t, 20*time.Second, "restarted instance attributes to the same target", func() bool {
		return countRows(t, st, "scope = 'process' AND target_id = ?", target) > n+2
	})
	again.stop(t)
}

// writeProc writes a fake /proc: node CPU times and pid → {ppid, ticks}.
func writeProc(tb testing.TB, root string, busy, total int, procs map[int][2]int) {
	tb.Helper()
	stat := fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\n", busy, total-busy, busy, total-busy)
	require.NoError(tb, writeAtomic(filepath.Join(root, "stat"), stat))
	for pid, p := range procs {
		dir := filepath.Join(root, fmt.Sprint(pid))
		require.NoError(tb, os.MkdirAll(dir, 0o755))
		line := fmt.Sprintf("%d (p) S %d 1 1 0 -1 0 0 0 0 0 %d 0 0 0 20 0 1 0 %d 1 1\n", pid, p[0], p[1], pid)
		require.NoError(tb, writeAtomic(filepath.Join(dir, "stat"), line))
		require.NoError(tb, writeAtomic(filepath.Join(dir, "cgroup"), "0::/user.slice\n"))
	}
}

// writeAtomic replaces a file so concurrent readers never see it half
// written, as procfs guarantees.
func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Without a spool, rows waiting in memory for ClickHouse are not durable,
// so commits wait (the collector reports not ready). Readings wait in
// windows and are committed once ClickHouse is back, at full resolution;
// past the bound the runner returns to its last commit instead, and its
// next reading covers the stretch in one interval. Either way no interval
// is lost and none is stored twice.
func TestCommitsWaitWhileClickHouseIsDownWithoutSpool(t *testing.T) {
	for _, tt := range []struct {
		name      string
		buffered  int
		rollbacks bool
	}{{"windows kept", 200_000, false}, {"bound reached", 30, true}} {
		t.Run(tt.name, func(t *testing.T) {
			st := &failingStore{Store: testenv.Store(t)}
			farm := newKeplerFarm(t)
			cfg := testConfig("c1", 200*time.Millisecond)
			cfg.Sources = farm.sources(1)
			cfg.BatchSize, cfg.MaxBuffered = 10, tt.buffered
			in := startCollector(t, testenv.NATS(t), cfg, st)
			publishAssign(t, in.b, "e1-r0001", podTargets(1))
			testenv.Eventually(t, 20*time.Second, "samples flowing", func() bool { return countRows(t, st.Store, "scope = 'pod'") >= 2 })
			st.setDown(true)
			downMs := time.Now().UnixMilli()
			testenv.Eventually(t, 20*time.Second, "not ready: rows can be made durable nowhere", func() bool {
				err := in.c.Check()
				return err != nil && strings.Contains(err.Error(), "no spool directory")
			})
			testenv.Eventually(t, 20*time.Second, "a few intervals into the outage", func() bool {
				if tt.rollbacks {
					v, _ := in.gauge(t, collector.MetricCommitRollbacks, "kepler/node-00")
					return v >= 2
				}
				return time.Now().UnixMilli()-downMs > 2000
			})
			st.setDown(false)
			upMs := time.Now().UnixMilli()
			testenv.Eventually(t, 20*time.Second, "ready and writing again", func() bool {
				return in.ready() == nil && countRows(t, st.Store, "scope = 'node' AND ts_ms > ?", upMs+500) >= 2
			})
			in.stop(t)
			rollbacks, _ := in.gauge(t, collector.MetricCommitRollbacks, "kepler/node-00")
			c := checkSeries(t, st.Store, 1, cfg.Interval, time.Hour)
			t.Logf("rows %d, largest step %s, rollbacks %.0f", c.rows, c.maxStep, rollbacks)
			if tt.rollbacks {
				require.Positive(t, rollbacks)
			} else {
				require.Zero(t, rollbacks)
				require.Less(t, c.maxStep, time.Duration(upMs-downMs)*time.Millisecond/2, "the outage kept its resolution")
			}
		})
	}
}

// What the service's /healthz asks — the bus and the collector — says not
// ready until the assignment consumer consumes: the collector declares it
// in New, the bus reports it (and the energy-collector-* consumer that
// bus.ExpectedConsumers names) as not started, and Run starts it.
func TestNotReadyUntilTheAssignmentConsumerConsumes(t *testing.T) {
	in := newCollector(t, testenv.NATS(t), testConfig("c1", 200*time.Millisecond), testenv.Store(t))
	err := in.ready()
	require.ErrorContains(t, err, "consumer energy-collector-*: not started")
	require.ErrorContains(t, err, "consumer energy-collector-c1: not started")
	require.ErrorContains(t, err, "kv_bucket: kv bucket not opened yet")

	in.start(t)
	testenv.Eventually(t, 20*time.Second, "ready once consuming", func() bool { return in.ready() == nil })
	in.stop(t)
}
