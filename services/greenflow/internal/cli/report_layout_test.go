package cli

import (
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

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
