package report_test

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// TestExportSamplesPerRun: three runs — two overlapping in time on nodes
// n1 and n1+n2, one a day later on n1. Each run's rows are its nodes'
// samples within its phases: a sample both overlapping runs hold comes once
// for each, a sample between runs or on another run's node does not come.
func TestExportSamplesPerRun(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const t0, day = int64(1_760_000_000_000), int64(24 * 3600 * 1000)
	type span struct {
		id, nodes  string
		start, end int64
	}
	spans := []span{{"e-r0000", "n1", t0, t0 + 10_000}, {"e-r0001", "n1,n2", t0 + 5_000, t0 + 15_000}, {"e-r0002", "n1", t0 + day, t0 + day + 10_000}}
	var runs []store.Run
	var targets []store.RunTarget
	for i, s := range spans {
		ph, _ := json.Marshal([]events.Phase{{Name: "measure", StartMs: s.start, EndMs: s.end}})
		runs = append(runs, store.Run{ExperimentID: "e", RunID: s.id, Index: uint32(i), State: events.RunStateDone, Phases: string(ph),
			MeasureStartMs: s.start, MeasureEndMs: s.end})
		for _, n := range []string{"n1", "n2"} {
			if n == "n2" && s.nodes == "n1" {
				continue
			}
			targets = append(targets, store.RunTarget{ExperimentID: "e", RunID: s.id, TargetID: "process/" + s.id + "/" + n, Kind: "process", Node: n,
				Role: results.RoleSUT})
		}
		require.NoError(t, st.ReplaceResults(ctx, "e", s.id, []store.Result{{ExperimentID: "e", RunID: s.id, Scope: results.ScopeRun,
			Metric: results.DurationS, Value: 10}}))
	}
	// A run that failed in its baseline: samples, but no measured window.
	ph, _ := json.Marshal([]events.Phase{{Name: "baseline", StartMs: t0 + day + 20_000, EndMs: t0 + day + 30_000}})
	runs = append(runs, store.Run{ExperimentID: "e", RunID: "e-r0003", Index: 3, State: events.RunStateFailed, Phases: string(ph)})
	targets = append(targets, store.RunTarget{ExperimentID: "e", RunID: "e-r0003", TargetID: "process/e-r0003/n1", Kind: "process", Node: "n1",
		Role: results.RoleSUT})
	require.NoError(t, st.UpsertRuns(ctx, runs))
	require.NoError(t, st.ReplaceRunTargets(ctx, targets))
	var samples []store.Sample
	for _, ts := range []int64{t0 + 1000, t0 + 7000, t0 + 12_000, t0 + 20_000, t0 + day + 1000, t0 + day + 25_000} {
		for _, n := range []string{"n1", "n2", "n3"} {
			samples = append(samples, store.Sample{TsMs: ts, Node: n, Scope: "node", TargetID: "node/" + n, Source: "rapl", PowerW: 5, DeltaJ: 5,
				IntervalMs: 1000})
		}
	}
	require.NoError(t, st.InsertSamples(ctx, samples))

	dir := t.TempDir()
	_, err := report.Export(ctx, st, "e", dir, true)
	require.NoError(t, err)
	f, err := os.Open(filepath.Join(dir, "samples.csv"))
	require.NoError(t, err)
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	got := map[string][]string{}
	for _, r := range recs[1:] {
		got[r[0]] = append(got[r[0]], r[2]+" "+r[4])
		if r[0] == "e-r0003" {
			require.Empty(t, r[3], "t_s: no measured window to count from")
		} else {
			_, err := strconv.ParseFloat(r[3], 64)
			require.NoError(t, err, "t_s of %s", r[0])
		}
	}
	require.ElementsMatch(t, []string{ms0(t0, day+25_000) + " n1"}, got["e-r0003"])
	ms := func(d int64) string { return strconv.FormatInt(t0+d, 10) }
	require.ElementsMatch(t, []string{ms(1000) + " n1", ms(7000) + " n1"}, got["e-r0000"])
	require.ElementsMatch(t, []string{ms(7000) + " n1", ms(7000) + " n2", ms(12_000) + " n1", ms(12_000) + " n2"}, got["e-r0001"])
	require.ElementsMatch(t, []string{ms(day+1000) + " n1"}, got["e-r0002"])
}

func ms0(t0, d int64) string { return strconv.FormatInt(t0+d, 10) }
