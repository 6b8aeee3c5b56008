package sink_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

// flakyStore fails every insert while down is set, and records what it
// accepted.
type flakyStore struct {
	mu      sync.Mutex
	down    bool
	samples []store.Sample
	metrics []store.RunMetric
	calls   int
}

var errDown = errors.New("clickhouse: connection refused")

func (f *flakyStore) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *flakyStore) InsertSamples(_ context.Context, s []store.Sample) error {
	return f.insert(func() { f.samples = append(f.samples, s...) })
}

func (f *flakyStore) InsertRunMetrics(_ context.Context, m []store.RunMetric) error {
	return f.insert(func() { f.metrics = append(f.metrics, m...) })
}

// insert counts a call and, unless the store is down, keeps the rows.
func (f *flakyStore) insert(keep func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return errDown
	}
	keep()
	return nil
}

func (f *flakyStore) count() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.samples), len(f.metrics)
}

func rows(from, n int) []store.Sample {
	out := make([]store.Sample, n)
	for i := range out {
		out[i] = store.Sample{TsMs: int64(from + i), Node: "n1", Scope: "node", TargetID: "node/n1", DeltaJ: 1, IntervalMs: 1000}
	}
	return out
}

func testConfig() sink.Config {
	return sink.Config{BatchSize: 50, FlushInterval: 10 * time.Millisecond, WriteTimeout: time.Second, MaxPending: 2000,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, DrainTimeout: 2 * time.Second}
}

// While the store is down, rows wait in the backlog — in memory or in the
// spool — and reach the store, once each and in order, when it is back.
func TestWriterKeepsRowsWhileStoreIsDown(t *testing.T) {
	for _, tt := range []struct {
		name  string
		queue func(t *testing.T) sink.Queue
	}{
		{"memory", func(*testing.T) sink.Queue { return sink.NewMemory(10_000) }},
		{"spool", func(t *testing.T) sink.Queue {
			d, err := sink.OpenDir(t.TempDir(), 1<<20)
			require.NoError(t, err)
			return d
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &flakyStore{}
			reg := prometheus.NewRegistry()
			w, stop := runWriter(t, testConfig(), sink.Deps{Store: st, Queue: tt.queue(t), Registry: reg})

			w.AddSamples(rows(0, 100))
			testenv.Eventually(t, 5*time.Second, "first rows written", func() bool { n, _ := st.count(); return n == 100 })
			st.setDown(true)
			for i := 1; i <= 10; i++ {
				w.AddSamples(rows(i*100, 100))
				w.AddMetrics([]store.RunMetric{{RunID: "r1", TsMs: int64(i), Name: "collector_cpu_seconds", Value: float64(i)}})
			}
			testenv.Eventually(t, 5*time.Second, "rows in the backlog", func() bool { return w.BacklogRows() == 1010 })
			require.Positive(t, metricValue(t, reg, sink.MetricFailures))
			st.setDown(false)
			testenv.Eventually(t, 5*time.Second, "backlog written", func() bool { n, m := st.count(); return n == 1100 && m == 10 })
			// The store counts a batch before the writer takes it off its
			// backlog: the backlog empties just after.
			testenv.Eventually(t, 5*time.Second, "backlog empty", func() bool { return w.BacklogRows() == 0 })
			stop()

			for i, s := range st.samples {
				require.Equal(t, int64(i), s.TsMs, "in order, once each")
			}
			require.Zero(t, metricValue(t, reg, sink.MetricDropped))
			require.Equal(t, 1110.0, metricValue(t, reg, sink.MetricWritten))
		})
	}
}

// Beyond the bound, rows are dropped and counted; everything within it
// arrives.
func TestWriterCountsLossBeyondBound(t *testing.T) {
	st := &flakyStore{down: true}
	reg := prometheus.NewRegistry()
	w, stop := runWriter(t, testConfig(), sink.Deps{Store: st, Queue: sink.NewMemory(300), Registry: reg})
	for i := range 10 {
		w.AddSamples(rows(i*50, 50))
		i := i
		testenv.Eventually(t, 5*time.Second, "batch handled", func() bool {
			return w.BacklogRows()+int(metricValue(t, reg, sink.MetricDropped)) == (i+1)*50
		})
	}
	require.Equal(t, 300, w.BacklogRows())
	require.Equal(t, 200.0, metricValue(t, reg, sink.MetricDropped))
	st.setDown(false)
	testenv.Eventually(t, 5*time.Second, "backlog written", func() bool { n, _ := st.count(); return n == 300 })
	stop()
	require.Equal(t, int64(0), st.samples[0].TsMs, "the oldest rows were kept")
}

// A spool keeps its batches across a restart, refuses a second user, and
// reports an unreadable batch instead of failing the rest.
func TestSpoolSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	d, err := sink.OpenDir(dir, 1<<20)
	require.NoError(t, err)
	_, err = sink.OpenDir(dir, 1<<20)
	require.ErrorContains(t, err, "in use by another collector")
	for i := range 3 {
		require.NoError(t, d.Push(sink.Batch{Samples: rows(i*10, 10)}))
	}
	require.NoError(t, d.Push(sink.Batch{Metrics: []store.RunMetric{{RunID: "r1", Value: 1}}}))
	require.NoError(t, d.Close())

	// A write that a crash interrupted leaves a temporary file behind.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("partial"), 0o600))
	d, err = sink.OpenDir(dir, 1<<20)
	require.NoError(t, err)
	require.Equal(t, 4, d.Len())
	require.Equal(t, 31, d.Rows())
	b, err := d.Peek()
	require.NoError(t, err)
	require.Equal(t, rows(0, 10), b.Samples)
	require.NoError(t, d.Pop())

	// Corrupt the next batch.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".batch" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), []byte("garbage"), 0o600))
			break
		}
	}
	_, err = d.Peek()
	require.ErrorContains(t, err, "decode spooled batch")
	require.NoError(t, d.Pop())
	b, err = d.Peek()
	require.NoError(t, err)
	require.Equal(t, rows(20, 10), b.Samples)

	// The bound is in bytes.
	small, err := sink.OpenDir(t.TempDir(), 200)
	require.NoError(t, err)
	require.ErrorIs(t, small.Push(sink.Batch{Samples: rows(0, 100)}), sink.ErrFull)
	require.Zero(t, small.Len())
	require.NoError(t, small.Close())
	require.NoError(t, d.Close())
}

// At shutdown a spool keeps what ClickHouse did not take, and the next
// writer on the same directory delivers it.
func TestWriterSpoolCarriesRowsToTheNextRun(t *testing.T) {
	dir := t.TempDir()
	st := &flakyStore{down: true}
	cfg := testConfig()
	cfg.DrainTimeout = 50 * time.Millisecond
	d, err := sink.OpenDir(dir, 1<<20)
	require.NoError(t, err)
	w, stop := runWriter(t, cfg, sink.Deps{Store: st, Queue: d})
	w.AddSamples(rows(0, 120))
	testenv.Eventually(t, 5*time.Second, "rows spooled", func() bool { return w.BacklogRows() == 120 })
	stop()

	st.setDown(false)
	d, err = sink.OpenDir(dir, 1<<20)
	require.NoError(t, err)
	require.Equal(t, 120, d.Rows())
	w, stop = runWriter(t, cfg, sink.Deps{Store: st, Queue: d})
	testenv.Eventually(t, 5*time.Second, "spooled rows written", func() bool { n, _ := st.count(); return n == 120 })
	stop()
}

// metricValue sums the values of metric name in reg.
func metricValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	require.NoError(tb, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

// A ticket says when its rows are durable: written to the store, or held
// by a spool; rows waiting in memory for a store that is down are not, and
// rows dropped for want of room are lost. Check fails while rows can be
// made durable nowhere.
func TestTicketsFollowDurability(t *testing.T) {
	for _, tt := range []struct {
		name    string
		queue   func(t *testing.T) sink.Queue
		durable bool // rows are durable while the store is down
	}{
		{"memory", func(*testing.T) sink.Queue { return sink.NewMemory(10_000) }, false},
		{"spool", func(t *testing.T) sink.Queue {
			d, err := sink.OpenDir(t.TempDir(), 1<<20)
			require.NoError(t, err)
			return d
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &flakyStore{}
			w, stop := runWriter(t, testConfig(), sink.Deps{Store: st, Queue: tt.queue(t)})

			require.True(t, w.AddSamples(nil).Durable(), "nothing to wait for")
			// 120 rows make three batches of at most 50.
			tk := w.AddSamples(rows(0, 120))
			waitTicket(t, tk)
			require.True(t, tk.Durable())
			require.NoError(t, w.Check())

			st.setDown(true)
			tk = w.AddSamples(rows(120, 30))
			testenv.Eventually(t, 5*time.Second, "rows in the backlog", func() bool { return w.BacklogRows() == 30 })
			if tt.durable {
				waitTicket(t, tk)
				require.True(t, tk.Durable(), "spooled")
				require.NoError(t, w.Check(), "rows still have a durable home")
			} else {
				require.False(t, tk.Durable(), "waiting in memory")
				select {
				case <-tk.Done():
					t.Fatal("not done while in memory")
				default:
				}
				require.ErrorContains(t, w.Check(), "no spool directory")
			}
			st.setDown(false)
			waitTicket(t, tk)
			require.True(t, tk.Durable())
			testenv.Eventually(t, 5*time.Second, "writes recovered", func() bool { return w.Check() == nil })
			stop()
			n, _ := st.count()
			require.Equal(t, 150, n)
		})
	}
}

func TestTicketsOfDroppedRowsAreLost(t *testing.T) {
	st := &flakyStore{down: true}
	cfg := testConfig()
	cfg.MaxPending = 100
	w, err := sink.NewWriter(cfg, sink.Deps{Store: st, Queue: sink.NewMemory(60), Logger: testenv.Logger(t)})
	require.NoError(t, err)
	tooMany := w.AddSamples(rows(0, 150))
	require.True(t, tooMany.Lost(), "beyond MaxPending")
	r := testenv.Go(t, context.Background(), w.Run)
	// The 100 kept rows make batches of 50: one fits the 60-row backlog.
	testenv.Eventually(t, 5*time.Second, "backlog filled", func() bool { return w.BacklogRows() == 50 })
	tk := w.AddSamples(rows(200, 20))
	waitTicket(t, tk)
	require.True(t, tk.Lost(), "backlog full")
	kept := w.AddSamples(rows(300, 5))
	st.setDown(false)
	waitTicket(t, kept)
	require.True(t, kept.Durable())

	// A memory backlog left at shutdown is lost.
	st.setDown(true)
	last := w.AddSamples(rows(400, 5))
	testenv.Eventually(t, 5*time.Second, "in the backlog", func() bool { return w.BacklogRows() == 5 })
	require.NoError(t, r.Stop(time.Minute, "writer"))
	require.True(t, last.Lost())
}

// A spool must still encode batches that carry tickets.
func TestSpoolEncodesBatchesWithTickets(t *testing.T) {
	st := &flakyStore{down: true}
	d, err := sink.OpenDir(t.TempDir(), 1<<20)
	require.NoError(t, err)
	w, stop := runWriter(t, testConfig(), sink.Deps{Store: st, Queue: d})
	tk := w.AddSamples(rows(0, 70))
	waitTicket(t, tk)
	require.True(t, tk.Durable())
	st.setDown(false)
	testenv.Eventually(t, 5*time.Second, "spool written", func() bool { n, _ := st.count(); return n == 70 })
	stop()
	for i, s := range st.samples {
		require.Equal(t, int64(i), s.TsMs)
	}
}

// runWriter builds a writer and runs it; stop ends it and checks that it
// returned cleanly.
func runWriter(t *testing.T, cfg sink.Config, d sink.Deps) (w *sink.Writer, stop func()) {
	t.Helper()
	d.Logger = testenv.Logger(t)
	w, err := sink.NewWriter(cfg, d)
	require.NoError(t, err)
	r := testenv.Go(t, context.Background(), w.Run)
	return w, func() {
		t.Helper()
		require.NoError(t, r.Stop(time.Minute, "writer"))
	}
}

func waitTicket(tb testing.TB, tk *sink.Ticket) {
	tb.Helper()
	select {
	case <-tk.Done():
	case <-time.After(10 * time.Second):
		tb.Fatal("ticket not done")
	}
}

// With a spool, a ClickHouse outage alone keeps the writer ready; a full
// spool as well does not.
func TestCheckFailsWhenStoreAndSpoolBothFail(t *testing.T) {
	st := &flakyStore{down: true}
	d, err := sink.OpenDir(t.TempDir(), 2000)
	require.NoError(t, err)
	w, stop := runWriter(t, testConfig(), sink.Deps{Store: st, Queue: d})
	waitTicket(t, w.AddSamples(rows(0, 5)))
	require.NoError(t, w.Check(), "spooled")
	tk := w.AddSamples(rows(5, 500))
	waitTicket(t, tk)
	require.True(t, tk.Lost())
	err = w.Check()
	require.ErrorContains(t, err, "and the spool too")
	require.ErrorIs(t, err, sink.ErrFull)
	st.setDown(false)
	testenv.Eventually(t, 5*time.Second, "ready again", func() bool { return w.Check() == nil })
	stop()
}
