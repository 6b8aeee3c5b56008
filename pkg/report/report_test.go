package report

import (
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svgplot"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lineBreaks is run by Chromium in a copy of the page: for every table
// cell it finds where the browser broke the cell's text over lines, and
// records the cells broken inside a number, or inside a token — anywhere
// but at a space or after a separator (",", ";", "/", "_", "-").
const lineBreaks = `<script>
const num = /^[-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?%?( [±/] [-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?%?)?( [!‡*])*$/;
const bad = [];
for (const td of document.querySelectorAll('td')) {
  const text = td.textContent;
  let prevTop = null, prev = '';
  const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (let i = 0; i < n.length; i++) {
      const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
      const rects = r.getClientRects(); const ch = n.data[i];
      if (rects.length === 0 || ch === ' ') { prev = ch; continue; }
      const top = Math.round(rects[0].top);
      if (prevTop !== null && top > prevTop + 2) {
        if (num.test(text) || !(prev === ' ' || ',;/_-'.includes(prev))) bad.push(text + ' | broken before: ' + n.data.slice(i));
      }
      prevTop = top; prev = ch;
    }
  }
}
document.body.setAttribute('data-bad-breaks', JSON.stringify(bad));
</script>`

// TestReportTablesBreakOnlyAtSeparators renders a report in headless
// Chromium, in a window narrower than its tables, and checks that no
// number is broken over two lines ("179.9 / 1") and that ids and lists
// break only at spaces and separators: wide tables scroll instead.
func TestReportTablesBreakOnlyAtSeparators(t *testing.T) {
	st, ctx := testenv.ParallelStore(t)
	const start = int64(1_760_000_000_000)
	var runs []store.Run
	for i := range 3 {
		id := fmt.Sprintf("uc3-local-demo-20261130-r%04d", i)
		runs = append(runs, store.Run{ExperimentID: "uc3-local-demo-20261130", RunID: id, State: events.RunStateDone,
			ConfigHash: fmt.Sprintf("9f3c2a7b1e%02d4d5e6f", i), Repetition: uint32(i),
			Factors:        fmt.Sprintf(`{"workload.sensors":"%d00000","sut.parallelism":"4","kafka.partitions":"12","workload.periodMs":"1000"}`, i+1),
			MeasureStartMs: start, MeasureEndMs: start + 179_900})
		var res []store.Result
		for m, v := range map[string]float64{results.DurationS: 179.9, results.ThroughputEPS: 398_798.4, results.SUTEnergyJ: 1234.567,
			results.NodeEnergyJ: 98765.43, results.SUTMicroJPerEvent: 20.7, results.LagTrendSlope: -398_798.123, results.LagSLOOK: 0,
			results.QualitySampleGaps: 3, results.QualityAttributionResidualJ: -12345.6789, results.OfferedRateEPS: 400_000,
			results.FlagPrefix + results.FlagEnergyGapBridged: 1, results.FlagPrefix + results.FlagDynamicEnergyNegative: 1} {
			res = append(res, store.Result{ExperimentID: "uc3-local-demo-20261130", RunID: id, Scope: results.ScopeRun, Metric: m, Value: v})
		}
		require.NoError(t, st.ReplaceResults(ctx, "uc3-local-demo-20261130", id, res))
	}
	require.NoError(t, st.UpsertRuns(ctx, runs))
	page, err := Report(ctx, st, "uc3-local-demo-20261130", 0)
	require.NoError(t, err)
	require.NotContains(t, string(page), "overflow-wrap:anywhere")

	path := filepath.Join(t.TempDir(), "report.html")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(page), "</body>", lineBreaks+"</body>", 1)), 0o644))
	out := testenv.DumpDOM(t, path, 520, 3000)
	m := regexp.MustCompile(`data-bad-breaks="([^"]*)"`).FindSubmatch(out)
	require.NotNil(t, m, "the check ran in the page")
	var bad []string
	require.NoError(t, json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &bad))
	require.Empty(t, bad, "cells broken inside a number or a token")
}

// behindRows are three loads of one configuration line; the 400,000-sensor
// run did not keep up (its lag grew at 398,798 msg/s against a 2,000 msg/s
// limit), so its µJ/event — events counted into Kafka — is the lowest.
func behindRows() []ResultRow {
	var rows []ResultRow
	for i, c := range []struct {
		sensors        string
		eps, uj, slope float64
		ok             float64
	}{{"100000", 100_000, 52, 3, 1}, {"200000", 200_000, 48, -0.2, 1}, {"400000", 400_000, 20.7, 398_798, 0}} {
		rows = append(rows, ResultRow{RunID: fmt.Sprintf("e-r%04d", i), ConfigHash: "cfg" + c.sensors, State: "done",
			Factors: map[string]string{"workload.sensors": c.sensors},
			Metrics: map[string]float64{results.OfferedRateEPS: c.eps, results.ThroughputEPS: c.eps, results.SUTMicroJPerEvent: c.uj,
				results.LagTrendSlope: c.slope, results.LagSLOThreshold: 2000, results.LagSLOOK: c.ok}})
	}
	return rows
}

func seriesNamed(t *testing.T, p svgplot.Plot, name string) svgplot.Series {
	t.Helper()
	for _, s := range p.Series {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no series %q in %q", name, p.Title)
	return svgplot.Series{}
}

// TestLoadPlotSetsApartRunsThatFellBehind: the run that failed the lag SLO
// is a cross with its own legend entry, and the trend line does not pass
// through it.
func TestLoadPlotSetsApartRunsThatFellBehind(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p := LoadPlot(sums, rows, results.SUTMicroJPerEvent, "SUT energy per event vs offered load")
	line := seriesNamed(t, p, "mean ± CI")
	require.Equal(t, []float64{100_000, 200_000}, line.X, "the line joins only the runs that kept up")
	bad := seriesNamed(t, p, LagSLOFailedName)
	require.Equal(t, "cross", bad.Shape)
	require.False(t, bad.Line)
	require.Contains(t, bad.Y, 20.7)
	reps := seriesNamed(t, p, "repetitions")
	require.NotContains(t, reps.Y, 20.7, "the failed run is not a plain repetition")
	svg := p.SVG()
	wellFormed(t, svg)
	require.Contains(t, svg, ">lag SLO failed: the SUT fell<", "the legend says what the cross means, wrapped, not cut")
	require.Contains(t, svg, ">events it did not process<")
}

// TestThroughputPlotShowsWhatTheSUTProcessed: delivered is labelled as what
// went into Kafka; processed (delivered less the lag's growth, at least 0)
// puts the run that fell behind far off the diagonal.
func TestThroughputPlotShowsWhatTheSUTProcessed(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p := ThroughputPlot(sums, rows)
	delivered := seriesNamed(t, p, "delivered (generator into Kafka)")
	require.Equal(t, []float64{100_000, 200_000, 400_000}, delivered.Y)
	processed := seriesNamed(t, p, ProcessedName)
	require.Equal(t, []float64{100_000, 200_000, 400_000}, processed.X)
	require.InDeltaSlice(t, []float64{99_997, 200_000.2, 1202}, processed.Y, 1e-6)
	rows[2].Metrics[results.LagTrendSlope] = 500_000
	p = ThroughputPlot(SummarizeRuns(rows, DefaultLevel), rows)
	require.Equal(t, 0.0, seriesNamed(t, p, ProcessedName).Y[2], "never below zero")
	wellFormed(t, p.SVG())
}

// TestRunTableShowsEachRunsLagVerdict: the runs table has the run's own
// lag-SLO verdict from its lag_slo_ok.
func TestRunTableShowsEachRunsLagVerdict(t *testing.T) {
	rows := append(behindRows(), ResultRow{RunID: "e-r0003", State: "failed"})
	head, body := RunTable(rows)
	col := slices.Index(head, "lag SLO")
	require.Positive(t, col)
	var got []string
	for _, r := range body {
		got = append(got, r[col])
	}
	require.Equal(t, []string{"ok", "ok", "FAIL", "-"}, got)
	require.False(t, strings.Contains(strings.Join(body[2], " "), "NaN"))
}

// TestParetoFrontLeavesOutRunsThatFellBehind: the configuration whose SUT
// did not keep up has the lowest µJ/event and the most events/s, yet it is
// not on the drawn front (nor in the table's); it is a cross of its own.
func TestParetoFrontLeavesOutRunsThatFellBehind(t *testing.T) {
	rows := behindRows()
	sums := SummarizeRuns(rows, DefaultLevel)
	p, note := ParetoPlot(sums)
	front := seriesNamed(t, p, "Pareto front")
	require.NotContains(t, front.X, 400_000.0)
	require.Equal(t, []float64{200_000}, front.X, "the table's front: the most events/s for the fewest µJ among those that kept up")
	require.Equal(t, []float64{20.7}, seriesNamed(t, p, LagSLOFailedName).Y)
	require.NotContains(t, note, "sensors=400000")
	wellFormed(t, p.SVG())
}

// TestProvenanceShowsOnlyWhatTheSpecSet: a spec that set no model is not
// shown as a model of 0 W; one that set some fields shows those.
func TestProvenanceShowsOnlyWhatTheSpecSet(t *testing.T) {
	meters := func(requested string) string {
		rows := ProvenanceRows(results.Provenance{Meters: []results.MeterProvenance{{ConfigHash: "c1",
			Requested: json.RawMessage(requested), EffectiveNote: "not recorded by this collector"}}})
		for _, r := range rows {
			if r[0] == "meters of config c1" {
				return r[1]
			}
		}
		t.Fatalf("no meters row in %v", rows)
		return ""
	}
	require.Equal(t, "requested "+NotSetNote+"; effective not recorded by this collector",
		meters(`{"source":"","model":{"idleWatts":0,"maxWatts":0}}`))
	require.Equal(t, `requested {"model":{"maxWatts":95},"source":"model"}; effective not recorded by this collector`,
		meters(`{"source":"model","model":{"idleWatts":0,"maxWatts":95},"extra":[]}`))
	require.Equal(t, "requested not recorded; effective not recorded by this collector", meters(``))
}
