package analyzer_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// splitRun is a run whose 10 s window ends now, measured by two
// collectors: c1 reads the node's meter (its total and unattributed rest,
// 10 W and 6 W) and has flushed every second up to 3 s past the window end
// (the node's total from RAPL up to raplUntil, from the model after it);
// c2 measures the SUT process (4 W, source scaphandre) and is slow: it has
// flushed only up to `till` seconds into the window. The load series reach
// past the end.
type splitRun struct {
	st       *store.Store
	b        *bus.Bus
	analyzed func(runID string) events.RunAnalyzed
	m        *events.RunMeasured
	start    int64
	next     int64 // c2's next second to store
}

// publishSplitRun starts an analyzer that waits samplesWait for late
// samples, stores the split run runID and publishes its run.measured.
func publishSplitRun(t *testing.T, samplesWait time.Duration, runID string, till, raplUntil int64) *splitRun {
	st, b, analyzed := startAnalyzer(t, samplesWait)
	end := time.Now().UnixMilli()
	r := &splitRun{st: st, b: b, analyzed: analyzed, start: end - 10_000, next: -3}
	node, sut := "n-"+runID, "process/"+runID+"/sut-0"
	r.m = &events.RunMeasured{ExperimentID: "ew", RunID: runID, ConfigHash: "c", MeasureStartMs: r.start, MeasureEndMs: end, OfferedRate: 100,
		Targets: []events.Target{{ID: sut, Kind: "process", Node: node, Role: "sut"}}}
	var rows []store.Sample
	for k := int64(-3); k <= 13; k++ {
		ts, n := r.start+k*1000, float64(k+4)
		total := counterSample(ts, node, "node", "node/"+node, 10, 10*n, 1000)
		if k > raplUntil {
			total.Source, total.Estimated = "model", true
		}
		rows = append(rows, total, counterSample(ts, node, "unattributed", "node/"+node, 6, 6*n, 1000))
	}
	require.NoError(t, st.InsertSamples(context.Background(), rows))
	storeBrokerSeries(t, st, runID, r.start)
	r.sutUpTo(t, till)
	require.NoError(t, b.Publish(context.Background(), *r.m, ""))
	return r
}

// sutUpTo is c2 flushing the SUT's samples of every second up to k.
func (r *splitRun) sutUpTo(t *testing.T, k int64) {
	var rows []store.Sample
	for ; r.next <= k; r.next++ {
		x := counterSample(r.start+r.next*1000, r.m.Targets[0].Node, "process", r.m.Targets[0].ID, 4, 4*float64(r.next+4), 1000)
		x.Source, x.Collector = "scaphandre", "c2"
		rows = append(rows, x)
	}
	require.NoError(t, r.st.InsertSamples(context.Background(), rows))
}

// TestAnalysisWaitsForASlowCollector: the node's own meter is complete past
// the window end, but the collector measuring the SUT has not flushed its
// last 3 s. Before the per-source watermark the analysis went ahead as soon
// as the node had a sample past the end, and the SUT's window came out 3 s
// short (28 J of 40, the run invalid for it); now it waits for that source
// and analyses the whole window once the batch lands.
func TestAnalysisWaitsForASlowCollector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := publishSplitRun(t, time.Minute, "ew-r0010", 7, 13)

	waitRedelivered(t, ctx, r.b)
	r.sutUpTo(t, 12) // the slow collector's batch lands

	got := r.analyzed("ew-r0010")
	require.False(t, got.Invalid, got.Reason)
	require.Empty(t, got.Flags)
	require.InDelta(t, 100.0, got.NodeEnergyJ, 1e-9)
	require.InDelta(t, 40.0, got.EnergyJ, 1e-9, "the SUT's whole window: 10 s at 4 W")
	res, err := r.st.Results(ctx, "ew")
	require.NoError(t, err)
	require.Equal(t, 0.0, index(res).v(t, "run", "", results.QualityLateS))
}

// TestSlowCollectorTimesOutWithWhatWasMissing: a source that never
// catches up does not hold the run forever; after samplesWait the analysis
// goes ahead, flags samples_late and says which series lacked how much.
func TestSlowCollectorTimesOutWithWhatWasMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := publishSplitRun(t, 2*time.Second, "ew-r0011", 7, 13)

	got := r.analyzed("ew-r0011")
	require.Contains(t, got.Flags, results.FlagSamplesLate)
	res, err := r.st.Results(ctx, "ew")
	require.NoError(t, err)
	rows := index(res)
	require.InDelta(t, 3.0, rows.v(t, "target", r.m.Targets[0].ID, results.QualityLateS), 1e-9, "the SUT's samples stop 3 s short")
	require.InDelta(t, 3.0, rows.v(t, "run", "", results.QualityLateS), 1e-9)
	require.False(t, rows.has("node", r.m.Targets[0].Node, results.QualityLateS), "the node's own meter was complete")
}

// TestReplacedMeterIsNotWaitedFor: the collector fell back from RAPL to
// the model 4 s into the window. RAPL's series stops there for good — the
// model's began after it and reaches the end — so the analysis does not
// wait for it (it would time out and flag every such run late).
func TestReplacedMeterIsNotWaitedFor(t *testing.T) {
	t.Parallel()
	r := publishSplitRun(t, 5*time.Minute, "ew-r0012", 13, 4)

	got := r.analyzed("ew-r0012")
	require.NotContains(t, got.Flags, results.FlagSamplesLate)
}
