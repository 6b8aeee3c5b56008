package analyzer_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/dashboards"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// BenchmarkDashboardQueriesAfterHistory runs every dashboard's ClickHouse
// query — variables, annotations, panels — on the one-hour benchmark run
// (100 targets at 1 Hz) analysed in a database holding a year of other
// samples (testenv.HistoryStore; 300 M rows in `make bench`), as Grafana
// would for the run's hour at a 5 s interval (a ~1,000-pixel panel) and,
// for the Nodes and meters board, for the last 7 days at 10 min. It
// reports the slowest query's time (the bound: 200 ms) and logs
// the five slowest; each query's time is its fastest of b.N rounds.
func BenchmarkDashboardQueriesAfterHistory(b *testing.B) {
	historyHour.once.Do(func() { setupHistory(b) })
	require.NoError(b, historyHour.err)
	ctx := context.Background()
	st, m := historyHour.st, historyHour.m
	a, err := analyzer.New(analyzer.Default(), analyzer.Deps{Store: st})
	require.NoError(b, err)
	fm := *m // with a factor, for the factor panel
	fm.Factors = map[string]string{"instances": "4"}
	_, err = a.AnalyzeAndStore(ctx, &fm)
	require.NoError(b, err)

	nodes := []string{"n0", "n1", "n2", "n3"}
	vars := map[string]dashboards.Var{
		"experiment":    {Values: []string{m.ExperimentID}},
		"configuration": {Values: []string{m.ConfigHash}, All: true, Multi: true},
		"run":           {Values: []string{m.RunID}},
		"node":          {Values: nodes, All: true, Multi: true},
		"factor":        {Values: []string{"instances"}},
	}
	hour := dashboards.Env{From: time.UnixMilli(m.BaselineStart), To: time.UnixMilli(m.MeasureEndMs), Interval: 5 * time.Second, Vars: vars}
	week := dashboards.Env{From: time.UnixMilli(m.MeasureEndMs).Add(-7 * 24 * time.Hour), To: time.UnixMilli(m.MeasureEndMs),
		Interval: 10 * time.Minute, Vars: vars}
	type query struct{ what, sql string }
	type span struct {
		name string
		env  dashboards.Env
	}
	fastest := map[string]time.Duration{}
	rows := map[string]int{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, board := range dashboards.Boards() {
			var qs []query
			for _, v := range board.Vars {
				qs = append(qs, query{"variable " + v.Name, v.SQL})
			}
			for _, an := range board.Annotations {
				qs = append(qs, query{"annotation " + an.Name, an.SQL})
			}
			for _, q := range board.Queries() {
				qs = append(qs, query{q.What, q.SQL})
			}
			spans := []span{{"hour", hour}}
			if board.UID == "greenflow-nodes" {
				spans = append(spans, span{"7 days", week})
			}
			for _, sp := range spans {
				for _, q := range qs {
					r, err := dashboards.Run(ctx, st.Conn(), q.sql, sp.env)
					if err != nil {
						b.Fatalf("%s %s: %v", board.UID, q.what, err)
					}
					key := fmt.Sprintf("%s %s (%s)", board.UID, q.what, sp.name)
					if d, ok := fastest[key]; !ok || r.Took < d {
						fastest[key] = r.Took
					}
					rows[key] = len(r.Rows)
				}
			}
		}
	}
	b.StopTimer()
	keys := make([]string, 0, len(fastest))
	for k := range fastest {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fastest[keys[i]] > fastest[keys[j]] })
	var lines []string
	for _, k := range keys[:min(5, len(keys))] {
		lines = append(lines, fmt.Sprintf("%s: %s, %d rows", k, fastest[k].Round(time.Millisecond/10), rows[k]))
	}
	b.Logf("%d queries on %d samples; slowest:\n%s", len(keys), historyHour.rows, strings.Join(lines, "\n"))
	b.ReportMetric(float64(fastest[keys[0]].Microseconds())/1000, "slowest_query_ms")
	b.ReportMetric(float64(historyHour.rows), "samples_stored")
}
