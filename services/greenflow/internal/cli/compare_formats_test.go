package cli_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// Three experiments of one name: A ran 100, 200 and 400 sensors, B 100 and
// 200, C 100 and 800 — three repetitions each.
const (
	expA = "uc3-local-demo-20261130-101500-a1b2"
	expB = "uc3-local-demo-20261130-111500-c3d4"
	expC = "uc3-local-demo-20261130-121500-e5f6"
)

// compareFixture stores the three experiments and returns a function that
// runs `greenflow compare` against them.
func compareFixture(t *testing.T) func(args ...string) string {
	t.Helper()
	dsn := compareStore(t)
	return func(args ...string) string {
		t.Helper()
		return clitest.MustRun(t, append([]string{"compare", "--clickhouse-dsn", dsn, "--state-dir", t.TempDir()}, args...)...)
	}
}

// compareStore stores the three experiments and returns its DSN.
func compareStore(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.ClickHouseDSN(t)
	st, err := store.Open(ctx, dsn, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	for ei, e := range []struct {
		id      string
		sensors []int
	}{{expA, []int{100, 200, 400}}, {expB, []int{100, 200}}, {expC, []int{100, 800}}} {
		var runs []store.Run
		n := 0
		for _, sensors := range e.sensors {
			for rep := range 3 {
				id := fmt.Sprintf("%s-r%04d", e.id, n)
				n++
				runs = append(runs, store.Run{ExperimentID: e.id, RunID: id, State: events.RunStateDone, Repetition: uint32(rep),
					ConfigHash: fmt.Sprintf("%x%06d", ei+10, sensors), Factors: fmt.Sprintf(`{"workload.sensors":"%d"}`, sensors),
					MeasureStartMs: 1_760_000_000_000, MeasureEndMs: 1_760_000_060_000})
				uj := 40 + float64(sensors)/100 + float64(ei)*3 + float64(rep)
				var res []store.Result
				for m, v := range map[string]float64{results.SUTMicroJPerEvent: uj, results.ThroughputEPS: float64(sensors) * (1 + 0.01*float64(rep)),
					results.OfferedRateEPS: float64(sensors)} {
					res = append(res, store.Result{ExperimentID: e.id, RunID: id, Scope: results.ScopeRun, Metric: m, Value: v})
				}
				require.NoError(t, st.ReplaceResults(ctx, e.id, id, res))
			}
		}
		require.NoError(t, st.UpsertRuns(ctx, runs))
	}
	return dsn
}

type compareOut struct {
	Sets []struct {
		Configuration string `json:"configuration"`
		Baseline      string `json:"baseline"`
		Groups        []struct {
			Letter  string            `json:"letter"`
			Label   string            `json:"label"`
			Factors map[string]string `json:"factors"`
		} `json:"groups"`
	} `json:"sets"`
	Unmatched []struct {
		Label string `json:"label"`
		Note  string `json:"note"`
	} `json:"unmatched"`
	Rows []cli.GroupStat `json:"rows"`
}

// TestCompareFormatsShowTheSameComparisons: `compare A B C` pairs like
// configurations across the three experiments — 100 sensors in all three,
// 200 in A and B — lists 400 (only A) and 800 (only C) as not compared,
// and the table, CSV, JSON and plot show exactly those comparisons with
// the same figures.
func TestCompareFormatsShowTheSameComparisons(t *testing.T) {
	t.Parallel()
	compare := compareFixture(t)
	plotPath := filepath.Join(t.TempDir(), "compare.svg")
	var got compareOut
	require.NoError(t, json.Unmarshal([]byte(compare(expA, expB, expC, "--format", "json", "--plot", plotPath)), &got))

	// Like with like: one set per configuration two or more ran.
	require.Len(t, got.Sets, 2)
	require.Equal(t, "sensors=100", got.Sets[0].Configuration)
	require.Equal(t, "sensors=200", got.Sets[1].Configuration)
	var letters []string
	for _, s := range got.Sets {
		require.Equal(t, s.Groups[0].Label, s.Baseline)
		for _, g := range s.Groups {
			require.Equal(t, strings.TrimPrefix(s.Configuration, "sensors="), g.Factors["workload.sensors"], "like with like")
			letters = append(letters, g.Letter)
		}
	}
	require.Equal(t, []string{"A", "B", "C", "D", "E"}, letters)
	require.Len(t, got.Unmatched, 2)
	require.Contains(t, got.Unmatched[0].Label, expA+" sensors=400")
	require.Contains(t, got.Unmatched[1].Label, expC+" sensors=800")

	type cmp struct{ config, letter, group, baseline, metric, pHolm string }
	ptr := func(v *float64) string {
		if v == nil {
			return ""
		}
		return fmt.Sprint(*v)
	}
	var fromJSON []cmp
	for _, r := range got.Rows {
		fromJSON = append(fromJSON, cmp{r.Configuration, r.Letter, r.Group, r.Baseline, r.Metric, ptr(r.PHolm)})
	}
	require.NotEmpty(t, fromJSON)

	// CSV: the same rows, then the configurations not compared.
	recs, err := csv.NewReader(strings.NewReader(compare(expA, expB, expC, "--format", "csv"))).ReadAll()
	require.NoError(t, err)
	var fromCSV []cmp
	var notCompared []string
	for _, rec := range recs[1:] {
		if rec[16] != "" {
			notCompared = append(notCompared, rec[2])
			continue
		}
		fromCSV = append(fromCSV, cmp{rec[0], rec[1], rec[2], rec[3], rec[4], rec[13]})
	}
	for i := range fromJSON {
		if fromJSON[i].pHolm != "" {
			var p float64
			_, err := fmt.Sscan(fromCSV[i].pHolm, &p)
			require.NoError(t, err)
			fromCSV[i].pHolm = fmt.Sprint(p)
		}
	}
	require.Equal(t, fromJSON, fromCSV)
	require.Equal(t, []string{got.Unmatched[0].Label, got.Unmatched[1].Label}, notCompared)

	// Table: every comparison's row, by letter, with the same adjusted p.
	table := compare(expA, expB, expC)
	require.Contains(t, table, "Configuration sensors=100:")
	require.Contains(t, table, "Configuration sensors=200:")
	require.Contains(t, table, "  D: "+expA+" sensors=200 (3 runs, baseline)")
	require.Contains(t, table, "  E: "+expB+" sensors=200 (3 runs, vs D)")
	for _, r := range got.Rows {
		p := "-"
		if r.PHolm != nil {
			p = fmt.Sprintf("%.3g", *r.PHolm)
		}
		if r.Letter == "A" || r.Letter == "D" {
			p = ""
		}
		require.Regexp(t, regexp.MustCompile(`(?m)^\s*`+r.Metric+`\s+`+r.Letter+`\s+3\s+.*`+regexp.QuoteMeta(p)), table, "%s %s", r.Metric, r.Letter)
	}
	require.Contains(t, table, "Not compared (no other argument ran this configuration):\n  "+got.Unmatched[0].Label+" (3 runs)\n  "+
		got.Unmatched[1].Label+" (3 runs)")

	// Plot: a mean per compared group, each under its letter, and a note
	// for each configuration not compared.
	svg, err := os.ReadFile(plotPath)
	require.NoError(t, err)
	for _, l := range letters {
		require.Regexp(t, `>`+l+`: [^<]+<`, string(svg), "the key entry of group %s", l)
	}
	require.Equal(t, 2, strings.Count(string(svg), "Not compared"), "the two unmatched configurations")

	// Two experiments: the same model, the like configurations paired.
	var two compareOut
	require.NoError(t, json.Unmarshal([]byte(compare(expA, expC, "--format", "json")), &two))
	require.Len(t, two.Sets, 1)
	require.Equal(t, "sensors=100", two.Sets[0].Configuration)
	require.Len(t, two.Unmatched, 3)
}

// TestComparePlotKeyNamesEachGroup: the plot of experiments of one name
// tells its groups apart — each key entry has the experiment's
// distinguishing part and the configuration, whole; the x axis is the
// groups' letters, not numbers; the unit is µJ; the plot is as tall as
// its key.
func TestComparePlotKeyNamesEachGroup(t *testing.T) {
	t.Parallel()
	compare := compareFixture(t)
	plotPath := filepath.Join(t.TempDir(), "compare.svg")
	compare(expA, expB, expC, "--plot", plotPath)
	b, err := os.ReadFile(plotPath)
	require.NoError(t, err)
	svg := string(b)
	require.NotContains(t, svg, "…", "no key entry is cut")
	legend := svg[strings.Index(svg, `<g class="legend">`):]
	for _, want := range []string{">A: 101500-a1b2 a000100<", ">B: 111500-c3d4 b000100<", ">C: 121500-e5f6 c000100<",
		">D: 101500-a1b2 a000200<", ">E: 111500-c3d4 b000200<", ">sensors=100<", ">sensors=200<"} {
		require.Contains(t, legend, want)
	}
	drawing := svg[:strings.Index(svg, `<g class="legend">`)]
	cats := regexp.MustCompile(`class="category"[^>]*>([^<]+)<`).FindAllStringSubmatch(drawing, -1)
	var labels []string
	for _, c := range cats {
		labels = append(labels, c[1])
	}
	require.Equal(t, []string{"A", "B", "C", "D", "E"}, labels, "the x axis names the groups")
	require.NotRegexp(t, `text-anchor="middle" fill="#333">[0-9]+</text>`, drawing, "no numeric x ticks for categories")
	require.Contains(t, svg, "sut_uj_per_event (µJ)")
	require.NotContains(t, svg, "[uJ]")
	h := regexp.MustCompile(`<svg [^>]*height="([0-9]+)"`).FindStringSubmatch(svg)
	var height int
	_, err = fmt.Sscan(h[1], &height)
	require.NoError(t, err)
	ys := regexp.MustCompile(`y="([0-9.]+)"`).FindAllStringSubmatch(legend, -1)
	var last float64
	_, err = fmt.Sscan(ys[len(ys)-1][1], &last)
	require.NoError(t, err)
	require.Less(t, last, float64(height), "the key fits in the plot")
}
