package cli_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

func row(id, hash, sensors, state string, tput, uj float64) report.ResultRow {
	return report.ResultRow{RunID: id, ConfigHash: hash, Factors: map[string]string{"workload.sensors": sensors}, State: state,
		Metrics: map[string]float64{"throughput_eps": tput, "sut_uj_per_event": uj, "offered_rate_eps": tput}}
}

func fixtureRows() []report.ResultRow {
	return []report.ResultRow{
		row("e-r0000", "aaaa", "100", events.RunStateDone, 100, 50),
		row("e-r0001", "bbbb", "200", events.RunStateDone, 200, 60),
		row("e-r0002", "aaaa", "100", events.RunStateDone, 110, 52),
		row("e-r0003", "bbbb", "200", events.RunStateDone, 210, 62),
		row("e-r0004", "aaaa", "100", events.RunStateDone, 120, 48),
		row("e-r0005", "cccc", "90", events.RunStateDone, 100, 70), // dominated by aaaa
		row("e-r0006", "aaaa", "100", events.RunStateFailed, 1, 1), // not counted
	}
}

func TestSummarizeRuns(t *testing.T) {
	sums := report.SummarizeRuns(fixtureRows(), 0.95)
	require.Len(t, sums, 3)
	a := sums[0]
	require.Equal(t, "aaaa", a.ConfigHash)
	require.Equal(t, []string{"e-r0000", "e-r0002", "e-r0004"}, a.RunIDs)
	tp := a.Metrics["throughput_eps"]
	require.Equal(t, 3, tp.N)
	require.InDelta(t, 110.0, tp.Mean, 1e-12)
	require.InDelta(t, 10.0, tp.SD, 1e-12)
	require.InDelta(t, 4.302652729749462*10/1.7320508075688772, tp.HalfWidth, 1e-9) // t(0.975, 2)·s/√n
	require.True(t, sums[0].Pareto)
	require.True(t, sums[1].Pareto)
	require.False(t, sums[2].Pareto, "cccc: fewer events/s and more µJ/event than aaaa")

	var out bytes.Buffer
	require.NoError(t, report.WriteSummaryTable(&out, sums, 0.10))
	require.Contains(t, out.String(), "110 ± 25")   // events/s of aaaa
	require.Contains(t, out.String(), "50.0 ± 5.0") // µJ/event of aaaa: s = 2, t·2/√3 = 4.97
}

func TestResultsTableAddsSummaryOnlyWithRepetitions(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, report.WriteResults(&out, "table", fixtureRows()))
	require.Contains(t, out.String(), "Per configuration")
	out.Reset()
	require.NoError(t, report.WriteResults(&out, "table", fixtureRows()[:2]))
	require.NotContains(t, out.String(), "Per configuration")
}

func TestCompare(t *testing.T) {
	rows := fixtureRows()
	side := func(exp string, rs []report.ResultRow, hashes ...string) []cli.Group {
		var out []cli.Group
		for _, h := range hashes {
			g := groupOf(rs, h)
			g.Experiment = exp
			out = append(out, g)
		}
		return out
	}
	// One configuration each: compared as named.
	cmp := cli.MatchSides([][]cli.Group{side("x", rows, "aaaa"), side("y", rows, "bbbb")})
	require.Len(t, cmp.Sets, 1)
	require.Len(t, cmp.Sets[0].Groups, 2)

	// Two multi-configuration experiments are matched by factors; what
	// only one ran is listed, not dropped.
	cmp = cli.MatchSides([][]cli.Group{side("x", rows, "aaaa", "bbbb", "cccc"), side("y", rows, "aaaa", "bbbb")})
	require.Len(t, cmp.Sets, 2)
	require.Len(t, cmp.Unmatched, 1)

	var out bytes.Buffer
	require.NoError(t, cli.WriteCompareMany(&out, "table", []cli.Group{groupOf(rows, "aaaa"), groupOf(rows, "bbbb")}, 0.95))
	s := out.String()
	require.Contains(t, s, "throughput_eps")
	require.Contains(t, s, "+86.4") // (205 - 110) / 110
	require.Contains(t, s, "*", "a clear difference is marked")
}

// groupOf builds a comparison side from the done rows of one configuration.
func groupOf(rows []report.ResultRow, hash string) cli.Group {
	var sel []report.ResultRow
	for _, r := range rows {
		if r.ConfigHash == hash && r.State == events.RunStateDone {
			sel = append(sel, r)
		}
	}
	return cli.NewGroup(hash, sel)
}

func TestResultsTableShowsFlags(t *testing.T) {
	rows := fixtureRows()[:2]
	rows[0].Flags = []string{"energy_gap_bridged", "load_takeover"}
	var out bytes.Buffer
	require.NoError(t, report.WriteResults(&out, "table", rows))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.True(t, strings.HasSuffix(strings.TrimSpace(lines[0]), "FLAGS"), lines[0])
	require.True(t, strings.HasSuffix(strings.TrimSpace(lines[1]), "energy_gap_bridged,load_takeover"), lines[1])
	require.True(t, strings.HasSuffix(strings.TrimSpace(lines[2]), "-"), lines[2])
	// Every flag shown is explained under the table.
	require.Contains(t, out.String(), "energy_gap_bridged: a sample gap within the bound was bridged")
	require.Contains(t, out.String(), "load_takeover: a generator instance died; another took its keys over")
}

// TestResultsByConfigInEveryFormat: the per-configuration statistics come
// as a table, as long-form CSV and as JSON with null for what one run
// cannot tell (its SD and interval).
func TestResultsByConfigInEveryFormat(t *testing.T) {
	rows := fixtureRows()
	var out bytes.Buffer
	require.NoError(t, report.WriteConfigResults(&out, "table", "e", rows))
	require.Contains(t, out.String(), "Per configuration")

	out.Reset()
	require.NoError(t, report.WriteConfigResults(&out, "csv", "e", rows))
	recs, err := csv.NewReader(&out).ReadAll()
	require.NoError(t, err)
	head := recs[0]
	require.Equal(t, []string{"experiment_id", "config_hash", "runs", "failed_runs", "metric", "unit", "n", "mean", "sd", "cv", "ci_level", "ci_low", "ci_high",
		"ci_crosses_zero", "median", "min", "max", "cv_flag", "lag_slo", "pareto_optimal", "estimated", "failure_reasons", "workload.sensors"}, head)
	col := func(rec []string, name string) string { return rec[slices.Index(head, name)] }
	var aaaa []string
	for _, rec := range recs[1:] {
		if col(rec, "config_hash") == "aaaa" && col(rec, "metric") == "throughput_eps" {
			aaaa = rec
		}
	}
	require.NotNil(t, aaaa, "configuration aaaa's throughput")
	require.Equal(t, "3", col(aaaa, "n"), "the failed run is not summarised")
	require.Equal(t, "1", col(aaaa, "failed_runs"), "but counted")
	require.Equal(t, "110", col(aaaa, "mean"))
	require.Equal(t, "10", col(aaaa, "sd"))
	require.Equal(t, "1/s", col(aaaa, "unit"), "the unit from pkg/results")
	require.Equal(t, "100", col(aaaa, "workload.sensors"))
	lo, err := strconv.ParseFloat(col(aaaa, "ci_low"), 64)
	require.NoError(t, err)
	require.InDelta(t, 110-4.303*10/math.Sqrt(3), lo, 0.01, "Student t with 2 degrees of freedom")

	out.Reset()
	require.NoError(t, report.WriteConfigResults(&out, "json", "e", rows))
	var got []report.ConfigSummaryJSON
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	require.Len(t, got, 3)
	byHash := map[string]report.ConfigSummaryJSON{}
	for _, c := range got {
		byHash[c.ConfigHash] = c
	}
	require.Len(t, byHash["aaaa"].RunIDs, 3)
	require.InDelta(t, 110, *byHash["aaaa"].Metrics["throughput_eps"].Mean, 1e-9)
	one := byHash["cccc"].Metrics["throughput_eps"]
	require.Equal(t, 1, one.N)
	require.Nil(t, one.SD, "one run has no SD")
	require.Nil(t, one.CILow)
	require.True(t, byHash["aaaa"].Pareto)
	require.False(t, byHash["cccc"].Pareto, "dominated")

	require.ErrorContains(t, report.WriteConfigResults(&out, "xml", "e", rows), `--format "xml": expected table, csv or json`)
}

// A configuration whose energy per event varies too much over two
// repetitions for its interval to stay above zero is marked ‡ and
// explained; a negative dynamic energy's flag is explained under the runs.
func TestTablesExplainFiguresThatAreNotPlain(t *testing.T) {
	rows := []report.ResultRow{row("e-r0000", "aaaa", "100", events.RunStateDone, 100, 10), row("e-r0001", "aaaa", "100", events.RunStateDone, 100, 90)}
	rows[1].Flags = []string{results.FlagDynamicEnergyNegative}
	var out bytes.Buffer
	require.NoError(t, report.WriteResults(&out, "table", rows))
	s := out.String()
	require.Contains(t, s, "50.0 ± 508.2 ! ‡", "µJ/event: mean 50, t(0.975, 1)·56.6/√2; CV 113 %")
	require.Contains(t, s, "‡ "+results.CICrossesZeroNote)
	require.NotContains(t, s, "100 ± 0 ‡", "throughput's interval does not cross zero")
	require.Contains(t, s, results.FlagDynamicEnergyNegative+": a dynamic energy (of a node, a target, the SUT or the run's nodes) is negative")

	// The same mark in the machine-readable forms.
	out.Reset()
	require.NoError(t, report.WriteConfigResults(&out, "json", "e", rows))
	var got []report.ConfigSummaryJSON
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	require.True(t, got[0].Metrics["sut_uj_per_event"].CICrossesZero)
	require.False(t, got[0].Metrics["throughput_eps"].CICrossesZero)
}

// TestParetoLeavesOutConfigurationsThatFailedTheLagSLO: the configuration
// with the most events/s and the fewest µJ/event did not sustain its load
// (its lag grew past the SLO): it is no trade-off, and the front is drawn
// among the others.
func TestParetoLeavesOutConfigurationsThatFailedTheLagSLO(t *testing.T) {
	fast := row("e-r0000", "fast", "300", events.RunStateDone, 300, 10)
	fast.Metrics[results.LagTrendSlope], fast.Metrics[results.LagSLOThreshold] = 23_427, 2000
	ok1 := row("e-r0001", "slow", "100", events.RunStateDone, 100, 20)
	ok1.Metrics[results.LagTrendSlope], ok1.Metrics[results.LagSLOThreshold] = 10, 2000
	sums := report.SummarizeRuns([]report.ResultRow{fast, ok1}, 0.95)
	require.False(t, sums[0].Pareto, "failed the lag SLO")
	require.True(t, sums[1].Pareto)
}

// The per-run CSV lists every run: a failed run without results has a row
// with its state and reason, and flags come with every row of their run.
func TestResultsCSVListsFailedRuns(t *testing.T) {
	rows := fixtureRows()
	rows[6].Metrics = map[string]float64{}
	rows[6].Reason = "provision failed: namespace quota"
	rows[0].Flags = []string{"meter_fallback"}
	var out bytes.Buffer
	require.NoError(t, report.WriteResults(&out, "csv", rows))
	recs, err := csv.NewReader(&out).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"run_id", "config_hash", "index", "repetition", "factors", "state", "metric", "value", "estimated", "flags", "reason"}, recs[0])
	var failed [][]string
	for _, r := range recs[1:] {
		if r[0] == "e-r0006" {
			failed = append(failed, r)
		}
		if r[0] == "e-r0000" {
			require.Equal(t, "meter_fallback", r[9])
			require.Equal(t, "aaaa", r[1])
		}
	}
	require.Len(t, failed, 1)
	require.Equal(t, events.RunStateFailed, failed[0][5])
	require.Equal(t, []string{"", "", ""}, failed[0][6:9])
	require.Equal(t, "provision failed: namespace quota", failed[0][10])

	// JSON: every run has the same keys.
	out.Reset()
	require.NoError(t, report.WriteResults(&out, "json", rows))
	var objs []map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &objs))
	for _, o := range objs {
		require.Contains(t, o, "flags")
		require.Contains(t, o, "reason")
	}
}

// A configuration none of whose runs succeeded is listed in every format of
// the per-configuration results, with its failed runs and their reasons
// (it used to vanish: a header only, [] in JSON); a flag raised by one run
// of three is summarised over the three (mean 1/3), not over the one.
func TestConfigResultsListConfigurationsWithoutDoneRuns(t *testing.T) {
	rows := fixtureRows()[:6]
	bad := row("e-r0007", "dddd", "3000000", events.RunStateFailed, 0, 0)
	bad.Metrics = map[string]float64{}
	bad.Reason = "load not delivered: 22.1 % of the events"
	bad2 := bad
	bad2.RunID = "e-r0008"
	rows = append(rows, bad, bad2)
	rows[0].Flags = []string{results.FlagDynamicEnergyNegative}

	var out bytes.Buffer
	require.NoError(t, report.WriteConfigResults(&out, "table", "e", rows))
	table := out.String()
	require.Contains(t, table, "sensors=3000000")
	require.Contains(t, table, "dddd (sensors=3000000): no done run — 2 runs failed: load not delivered: 22.1 % of the events")

	out.Reset()
	require.NoError(t, report.WriteConfigResults(&out, "csv", "e", rows))
	recs, err := csv.NewReader(&out).ReadAll()
	require.NoError(t, err)
	head := recs[0]
	col := func(rec []string, name string) string { return rec[slices.Index(head, name)] }
	var dddd [][]string
	var flag []string
	for _, rec := range recs[1:] {
		require.Len(t, rec, len(head))
		if col(rec, "config_hash") == "dddd" {
			dddd = append(dddd, rec)
		}
		if col(rec, "config_hash") == "aaaa" && col(rec, "metric") == results.FlagMetric(results.FlagDynamicEnergyNegative) {
			flag = rec
		}
	}
	require.Len(t, dddd, 1)
	require.Equal(t, "0", col(dddd[0], "runs"))
	require.Equal(t, "2", col(dddd[0], "failed_runs"))
	require.Equal(t, "load not delivered: 22.1 % of the events", col(dddd[0], "failure_reasons"))
	require.Equal(t, "3000000", col(dddd[0], "workload.sensors"))
	require.NotNil(t, flag)
	require.Equal(t, "3", col(flag, "n"), "the flag over every done run")
	mean, err := strconv.ParseFloat(col(flag, "mean"), 64)
	require.NoError(t, err)
	require.InDelta(t, 1.0/3, mean, 1e-9, "the share of runs flagged")

	out.Reset()
	require.NoError(t, report.WriteConfigResults(&out, "json", "e", rows))
	var got []report.ConfigSummaryJSON
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	require.Len(t, got, 4)
	last := got[3]
	require.Equal(t, "dddd", last.ConfigHash)
	require.Empty(t, last.RunIDs)
	require.Equal(t, 2, last.Failed)
	require.Equal(t, []string{"load not delivered: 22.1 % of the events"}, last.Reasons)
	require.Equal(t, "-", last.LagSLO)
	require.False(t, last.Pareto)
}
