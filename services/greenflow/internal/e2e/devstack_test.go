package e2e

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/testenv"
	analyzerapp "github.com/greenflow/greenflow/services/analyzer/app"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestExperimentEndToEndInOneProcess runs the example experiment through the
// dev stack, as `greenflow demo` does, and checks what a user would: every
// run done, non-zero energy, the event counts the load generator reported,
// energy conserved by attribution, and a malformed command dead-lettered
// without blocking the experiment.
func TestExperimentEndToEndInOneProcess(t *testing.T) {
	ctx, st, b := startStack(t, 3*time.Minute)
	stalled := testenv.StallWatch(t)

	// A malformed command first: it must go to the dead-letter stream with
	// a reason and must not block what follows.
	publishMalformedProvision(ctx, t, b)

	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "4s"), events.TypeLoadFinished, events.TypeRunAnalyzed)
	require.Equal(t, 2, n)
	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 2*time.Minute, nil))

	rows, err := report.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	done := map[string]bool{} // configurations with a done run
	for _, r := range rows {
		t.Logf("run %s: %s, %.0f events in the window, %.4f of the offered load (from the broker: %v; acknowledged by the generators: %.0f), flags %v %s",
			r.RunID, r.State, r.Metrics["events"], r.Metrics["events_delivered_ratio"], r.Metrics["events_from_broker"] == 1,
			r.Metrics["events_acknowledged"], r.Flags, r.Reason)
		if !requireDoneUnlessStarved(t, r) {
			continue
		}
		// A caveat on a derived figure (a negative dynamic energy on this
		// shared machine) may come; nothing may be wrong with the data.
		requireCleanData(t, r.RunID, r.Flags, stalled())
		require.Equal(t, 0.0, r.Metrics["invalid"])
		done[r.ConfigHash] = true
		fin, ok := devstacktest.Last[*events.LoadFinished](obs, r.RunID)
		require.True(t, ok, "load generator reported run %s", r.RunID)
		analyzed, ok := devstacktest.Last[*events.RunAnalyzed](obs, r.RunID)
		require.True(t, ok, "analyzer reported run %s", r.RunID)
		require.False(t, fin.Failed, fin.Reason)
		require.Greater(t, fin.RecordsSent, int64(0))
		require.Equal(t, float64(fin.RecordsSent), r.Metrics["records_sent_total"], "stored count = the generator's report")
		offered := r.Metrics["offered_rate_eps"]
		window := r.Metrics["duration_s"]
		require.InDelta(t, 4.0, window, 0.3, "measured window")
		// Events in the measured window: the offered rate over the window
		// within the analyzer's tolerance.
		require.InDelta(t, offered*window, r.Metrics["events_offered"], 1e-6)
		require.InDelta(t, offered*window, r.Metrics["events"], loadTolerance(r))
		require.LessOrEqual(t, r.Metrics["events"], float64(fin.RecordsSent))
		require.Greater(t, r.Metrics["node_energy_j"], 0.0)
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		require.Less(t, r.Metrics["sut_energy_j"], r.Metrics["node_energy_j"])
		require.Greater(t, r.Metrics["sut_uj_per_event"], 0.0)
		require.True(t, r.Estimated, "model figures are labelled estimated")
		require.InDelta(t, r.Metrics["sut_energy_j"], analyzed.EnergyJ, 1e-9)
		require.False(t, analyzed.Invalid)
		requireCleanData(t, r.RunID, analyzed.Flags, stalled())
	}
	require.Len(t, done, 2, "both configurations ended done")

	// Conservation in the stored samples: for every interval, the
	// attributed parts plus the unattributed rest equal the node total.
	q, err := st.Store.Conn().Query(ctx, `SELECT ts_ms,
		sumIf(delta_j, scope = 'node') AS total, sumIf(delta_j, scope IN ('process', 'unattributed')) AS parts
		FROM samples GROUP BY ts_ms HAVING countIf(scope = 'node') = 1`)
	require.NoError(t, err)
	intervals := 0
	for q.Next() {
		var ts int64
		var total, parts float64
		require.NoError(t, q.Scan(&ts, &total, &parts))
		require.InDelta(t, total, parts, 1e-9*math.Max(1, total), "interval %d", ts)
		intervals++
	}
	require.NoError(t, q.Err())
	require.Greater(t, intervals, 20)

	// The malformed command is in the dead-letter stream with the reason.
	dl, err := b.JetStream().OrderedConsumer(ctx, bus.StreamDeadLetter, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	msg, err := dl.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.Equal(t, "x-r0000", gjsonRun(msg.Data()))
	require.Contains(t, msg.Headers().Get(bus.HeaderDLQReason), "kafka")
}

func gjsonRun(b []byte) string {
	var v struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal(b, &v)
	return v.RunID
}

// loadTolerance is how far a run's events in the window may be from the
// offered load: the analyzer's default tolerance.
func loadTolerance(r report.ResultRow) float64 {
	cfg := analyzerapp.Service.Default()
	return cfg.LoadTolerance*r.Metrics["events_offered"] + r.Metrics["offered_rate_eps"]*cfg.LoadEdgeSlack.Seconds()
}

// shortOfOffer reports whether count falls short of the run's offered load
// beyond the analyzer's tolerance.
func shortOfOffer(r report.ResultRow, count float64) bool {
	return r.Metrics["events_offered"]-count > loadTolerance(r)
}

// starvedFlags are what a starved machine flags on a run nothing else
// disturbed: its meter read late (samples stretched or late, the gap a
// collector records when its lock lapsed unrenewed) and its load off the
// rate for a second or short at the end.
var starvedFlags = []string{results.FlagSamplesStretched, results.FlagSamplesLate, results.FlagEnergyGapRecorded,
	results.FlagLoadRateDeviation, results.FlagLoadMissed}

// starvedStall is a stall of the test process (the dev stack runs in it)
// that starves the collector: its lease at the tests' 200 ms interval
// (1.5 ×), past which its lock lapses and its reading is dropped.
const starvedStall = 300 * time.Millisecond

// requireCleanData checks the data of a run nothing disturbed: nothing
// flagged — or, when this process was stalled past starvedStall, only
// what a starved machine flags. Beside three busy processes on 2 cores an
// untouched run was flagged energy_gap_recorded, load_rate_deviation and
// samples_stretched, the collector logging its lock lapsed many times.
func requireCleanData(t *testing.T, runID string, flags []string, stalled time.Duration) {
	t.Helper()
	bad := results.DataQuality(flags)
	if stalled > starvedStall {
		if len(bad) > 0 {
			t.Logf("run %s: flagged %v, this process stalled for %s", runID, bad, stalled)
		}
		bad = slices.DeleteFunc(bad, func(f string) bool { return slices.Contains(starvedFlags, f) })
	}
	require.Empty(t, bad, "%s: an undisturbed run has nothing to flag in its data (longest stall of this process %s)", runID, stalled)
}

// requireDoneUnlessStarved checks an undisturbed run: it ended done, or it
// failed only because the machine starved the load generator — which both
// independent counts must then show — and was retried as a new run. It
// reports whether the run is done. On this 2-core machine beside three
// busy processes, 3 of an experiment's 4 runs of 2 s failed so (delivered
// 76–87 % of the offered load, the generator's own count agreeing) and
// were retried, each retry done; a test that counted on every run being
// done failed there, though the product did what it should.
func requireDoneUnlessStarved(t *testing.T, r report.ResultRow) bool {
	t.Helper()
	if r.State == events.RunStateFailed {
		require.Contains(t, r.Reason, "invalid measurement: offered load not delivered", r.RunID)
		require.Contains(t, r.Reason, "(retried as ", r.RunID)
		require.True(t, shortOfOffer(r, r.Metrics["events_acknowledged"]), "%s: the generators' own count agrees", r.RunID)
		require.Equal(t, 1.0, r.Metrics["invalid"], r.RunID)
		t.Logf("run %s failed on a load this machine starved (%.0f of %.0f events in the window): %s", r.RunID, r.Metrics["events"],
			r.Metrics["events_offered"], r.Reason)
		return false
	}
	require.Equal(t, events.RunStateDone, r.State, "%s: %s", r.RunID, r.Reason)
	return true
}
