package analyzer_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// liveRun stores a run whose 10 s window ends now: the load series reach
// past the window end; the energy samples stop at the second `till` (from
// the window start) and more can be added with upTo.
type liveRun struct {
	st    *store.Store
	m     *events.RunMeasured
	node  string
	start int64
	cum   float64
	next  int64 // next second to store
}

func newLiveRun(t *testing.T, st *store.Store, runID string, till int64) *liveRun {
	end := time.Now().UnixMilli()
	r := &liveRun{st: st, node: "n-" + runID, start: end - 10_000, next: -3}
	r.m = &events.RunMeasured{ExperimentID: "ew", RunID: runID, ConfigHash: "c", MeasureStartMs: r.start, MeasureEndMs: end, OfferedRate: 100,
		Targets: []events.Target{{ID: "process/" + runID + "/sut-0", Kind: "process", Node: r.node, Role: "sut"}}}
	storeBrokerSeries(t, st, runID, r.start)
	r.upTo(t, till)
	return r
}

// storeBrokerSeries stores the input topic's high-water marks of a run at
// 100 msg/s, every second from 3 s before the window start to 3 s past its
// 10 s end.
func storeBrokerSeries(t *testing.T, st *store.Store, runID string, start int64) {
	var pts []store.RunMetric
	for k := int64(-3); k <= 13; k++ {
		pts = append(pts, store.RunMetric{ExperimentID: "ew", RunID: runID, TsMs: start + k*1000, Name: analyzer.MetricInputHighWatermark,
			Labels: `{"topic":"in"}`, Value: float64(100 * (k + 3))})
	}
	require.NoError(t, st.InsertRunMetrics(context.Background(), pts))
}

// waitRedelivered waits for the analyzer to defer a run.measured
// (JetStream redelivers it).
func waitRedelivered(t *testing.T, ctx context.Context, b *bus.Bus) {
	t.Helper()
	cons, err := b.JetStream().Consumer(ctx, bus.StreamLifecycle, bus.ConsumerAnalyzer.Durable)
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, "the analyzer to defer the run.measured (redelivered)", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumRedelivered > 0
	})
}

// upTo stores the samples of every second up to k (from the window start).
func (r *liveRun) upTo(t *testing.T, k int64) {
	var rows []store.Sample
	for ; r.next <= k; r.next++ {
		ts := r.start + r.next*1000
		r.cum += 10
		rows = append(rows, counterSample(ts, r.node, "node", "node/"+r.node, 10, r.cum, 1000),
			counterSample(ts, r.node, "process", r.m.Targets[0].ID, 4, r.cum*0.4, 1000),
			counterSample(ts, r.node, "unattributed", "node/"+r.node, 6, r.cum*0.6, 1000))
	}
	require.NoError(t, r.st.InsertSamples(context.Background(), rows))
}

// startAnalyzer runs an analyzer waiting samplesWait for late data, on a
// store and a JetStream of its own, and returns the store, a client bus
// and a function that waits for the run.analyzed of a run.
func startAnalyzer(t *testing.T, samplesWait time.Duration) (*store.Store, *bus.Bus, func(runID string) events.RunAnalyzed) {
	st := testenv.Store(t)
	cfg := analyzer.Default()
	cfg.SamplesWait = samplesWait
	url := testenv.NATS(t)
	a, err := analyzer.New(cfg, analyzer.Deps{Bus: testenv.Bus(t, url, "analyzer"), Store: st, Logger: testenv.Logger(t),
		Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	run := testenv.Go(t, context.Background(), a.Run)
	t.Cleanup(func() { require.NoError(t, run.Stop(time.Minute, "the analyzer")) })
	b := testenv.Bus(t, url, "test")
	rec := testenv.Record(t, b, time.Now().Add(-time.Minute), events.TypeRunAnalyzed)
	return st, b, func(runID string) events.RunAnalyzed {
		return *rec.Wait(t, 45*time.Second, events.TypeRunAnalyzed, runID).(*events.RunAnalyzed)
	}
}

// TestAnalysisWaitsForTheLastSamples publishes a run.measured while the
// node's last samples are not stored yet: the analyzer must leave the
// message for later (it is Nak'ed, redelivered) instead of analysing a
// window whose end it cannot see, then analyse it in full once they arrive.
func TestAnalysisWaitsForTheLastSamples(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, b, analyzed := startAnalyzer(t, time.Minute)
	r := newLiveRun(t, st, "ew-r0000", 7) // samples up to 7 s of a 10 s window
	require.NoError(t, b.Publish(ctx, *r.m, ""))

	waitRedelivered(t, ctx, b)
	r.upTo(t, 12) // the collector's batch lands

	got := analyzed("ew-r0000")
	require.False(t, got.Invalid, got.Reason)
	require.Empty(t, got.Flags)
	require.InDelta(t, 100.0, got.NodeEnergyJ, 1e-9, "the whole window: 10 s at 10 W")
	require.InDelta(t, 40.0, got.EnergyJ, 1e-9)
	require.Equal(t, int64(1000), got.Events)
}

// TestAnalysisGoesAheadWhenSamplesStayLate: samples that never arrive do
// not hold the run forever: after samplesWait the analysis goes ahead,
// flags samples_late, and finds the window's end uncovered beyond the bound.
func TestAnalysisGoesAheadWhenSamplesStayLate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, b, analyzed := startAnalyzer(t, 2*time.Second)
	r := newLiveRun(t, st, "ew-r0001", 7)
	require.NoError(t, b.Publish(ctx, *r.m, ""))

	got := analyzed("ew-r0001")
	require.Contains(t, got.Flags, results.FlagSamplesLate)
	require.True(t, got.Invalid)
	require.Contains(t, got.Reason, "energy samples of node n-ew-r0001 cover 3.0 s less than the measured window")
	res, err := st.Results(ctx, "ew")
	require.NoError(t, err)
	require.Equal(t, 1.0, index(res).v(t, "run", "", results.FlagPrefix+results.FlagSamplesLate))
}

// TestRunFailsAtOnceWhenAConsumerCannotStart: the recorder's durable
// consumer exists with a configuration that cannot be changed (another
// deliver policy), so declaring it fails. Run must return that error at
// once — the service then fails and says why — instead of running on with
// one consumer dead until it is stopped.
func TestRunFailsAtOnceWhenAConsumerCannotStart(t *testing.T) {
	t.Parallel()
	st := testenv.Store(t)
	ctx := context.Background()
	b := testenv.Bus(t, testenv.NATS(t), "analyzer")
	testenv.BlockConsumer(t, b.JetStream(), bus.StreamLifecycle, bus.ConsumerRecorder.Durable, bus.Subject(events.TypeLoadProgress))
	a, err := analyzer.New(analyzer.Default(), analyzer.Deps{Bus: b, Store: st, Logger: testenv.Logger(t), Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	runErr := testenv.Go(t, ctx, a.Run).Wait(15*time.Second, "Run, while its context is live,")
	require.ErrorContains(t, runErr, "declare consumer "+bus.ConsumerRecorder.Durable)
}

// TestStoppedLoadIsAnalysedWithoutWaiting: a load stopped mid-window never
// reports past the window end, but its final progress adds up to the count
// load.finished reported, so the analysis does not wait out samplesWait for
// points that will never come. The shortfall makes the run invalid.
func TestStoppedLoadIsAnalysedWithoutWaiting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, b, analyzed := startAnalyzer(t, 5*time.Minute)
	end := time.Now().UnixMilli()
	r := &liveRun{st: st, node: "n-ew-r0002", start: end - 10_000, next: -3}
	r.m = &events.RunMeasured{ExperimentID: "ew", RunID: "ew-r0002", ConfigHash: "c", MeasureStartMs: r.start, MeasureEndMs: end, OfferedRate: 100,
		RecordsSent: 800, Targets: []events.Target{{ID: "process/ew-r0002/sut-0", Kind: "process", Node: r.node, Role: "sut"}}}
	r.upTo(t, 13)
	var pts []store.RunMetric
	for k := int64(-3); k <= 5; k++ { // stopped 5 s into the window: 800 records in all
		pts = append(pts, store.RunMetric{ExperimentID: "ew", RunID: "ew-r0002", TsMs: r.start + k*1000, Name: analyzer.MetricRecordsSent,
			Labels: `{"instance":"a"}`, Value: float64(100 * (k + 3))})
	}
	require.NoError(t, st.InsertRunMetrics(ctx, pts))
	require.NoError(t, b.Publish(ctx, *r.m, ""))

	got := analyzed("ew-r0002")
	require.True(t, got.Invalid)
	require.Contains(t, got.Reason, "offered load not delivered in the measured window: 500 of 1000 events (50.0%")
	require.NotContains(t, got.Flags, results.FlagSamplesLate)
}
