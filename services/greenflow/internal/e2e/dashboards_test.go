package e2e

import (
	"context"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/dashboards"
	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestDashboardQueries runs a two-run experiment through the dev stack
// (on a ClickHouse of its own, which has the read-only user Grafana is
// given) and then every dashboard's SQL as the ClickHouse plugin would
// send it, as that read-only user: each template variable's query (whose
// answers become the next variables' values), each annotation and each
// panel query, with All and with one value of every multi-value variable.
// A query must run, have the columns its panel reads (a time series: a
// DateTime "time" and numbers, strings as labels) and return rows unless
// its panel says why an undisturbed run leaves it empty. The Prometheus
// panels' metric and label names must be ones the services registered.
func TestDashboardQueries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := devstacktest.Options(t)
	o.ClickHouseDSN = "" // the stack's own server, with its read-only user
	o.UC3Command = []string{filepath.Join(binaries(t), "uc3-processor")}
	st, b := devstacktest.Start(t, o)

	// A malformed command: the platform dashboard's dead-letter panel
	// reads the counter it creates.
	publishMalformedProvision(ctx, t, b)

	id, n, obs := submitExample(ctx, t, b, phases("1s", "1s", "4s"), events.TypeRunAnalyzed)
	require.Equal(t, 2, n)
	obs.WaitFinal(t, 3*time.Minute, nil)

	require.NotEmpty(t, st.Endpoints.ClickHouseReaderDSN)
	reader, err := store.OpenReadOnly(ctx, st.Endpoints.ClickHouseReaderDSN, testenv.Logger(t))
	require.NoError(t, err)
	defer reader.Close()

	// The time range: the experiment's phases, a minute either side.
	phases, err := st.Store.RunPhases(ctx, id)
	require.NoError(t, err)
	require.NotEmpty(t, phases)
	from, to := phases[0].StartMs, phases[0].EndMs
	for _, p := range phases {
		from, to = min(from, p.StartMs), max(to, p.EndMs)
	}
	rng := dashboards.Env{From: time.UnixMilli(from - 60_000), To: time.UnixMilli(to + 60_000), Interval: time.Second}

	var timings []timing
	for _, board := range dashboards.Boards() {
		for _, pick := range []string{"all", "one"} {
			t.Run(board.UID+"/"+pick, func(t *testing.T) {
				env := rng
				env.Vars = map[string]dashboards.Var{}
				for _, v := range board.Vars {
					got := runQuery(ctx, t, reader, "variable "+v.Name, v.SQL, env)
					timings = append(timings, timingOf(board.UID, "variable "+v.Name, got))
					require.Len(t, got.Columns, 1, "variable %s: one column of values", v.Name)
					options := got.Strings(0)
					require.NotEmpty(t, options, "variable %s has no options", v.Name)
					switch {
					case v.Name == "experiment":
						require.Contains(t, options, id)
						env.Vars[v.Name] = dashboards.Var{Values: []string{id}}
					case v.Multi && pick == "all":
						env.Vars[v.Name] = dashboards.Var{Values: options, All: true, Multi: true}
					default:
						env.Vars[v.Name] = dashboards.Var{Values: options[:1], Multi: v.Multi}
					}
				}
				for _, a := range board.Annotations {
					got := runQuery(ctx, t, reader, "annotation "+a.Name, a.SQL, env)
					timings = append(timings, timingOf(board.UID, "annotation "+a.Name, got))
					require.Equal(t, []string{"time", "timeEnd", "text", "tags"}, got.Columns)
					require.NotEmpty(t, got.Rows, "annotation %s", a.Name)
					require.Subset(t, got.Strings(2), []string{events.RunStateBaseline, events.RunStateMeasuring})
					requirePhasesApart(t, a.Name, got)
				}
				for _, q := range board.Queries() {
					got := runQuery(ctx, t, reader, q.What, q.SQL, env)
					timings = append(timings, timingOf(board.UID, q.What, got))
					require.Equal(t, q.Columns, got.Columns, q.What)
					if q.Empty == "" {
						require.NotEmpty(t, got.Rows, "%s returned no rows", q.What)
					}
					if q.Format == dashboards.FormatTimeSeries {
						requireTimeSeries(t, q.What, got)
					}
					checkWhatAUserSees(t, board.UID, q.What, got)
				}
				if board.UID == "greenflow-run" {
					checkSLOLineStartsAtTheFit(ctx, t, reader, board, env)
				}
			})
		}
	}
	sort.Slice(timings, func(i, j int) bool { return timings[i].took > timings[j].took })
	for _, tm := range timings[:min(5, len(timings))] {
		t.Logf("slowest: %s %s: %s (%d rows)", tm.board, tm.what, tm.took, tm.rows)
	}

	checkPromQL(t, st.Registry.Gather)
}

// checkWhatAUserSees checks the figures a user opens these panels for.
func checkWhatAUserSees(t *testing.T, board, what string, got result) {
	t.Helper()
	switch {
	case board == "greenflow-run" && what == `panel "Power per role" query 1`:
		require.True(t, slices.ContainsFunc(got.Strings(1), func(s string) bool { return strings.HasPrefix(s, "sut · ") }),
			"the system under test has a power series: %v", got.Strings(1))
		require.True(t, slices.ContainsFunc(got.Strings(1), func(s string) bool { return strings.HasSuffix(s, " (estimated)") }),
			"this machine has no RAPL: model series are marked estimated: %v", got.Strings(1))
	case board == "greenflow-run" && what == `panel "Energy per event" query 1`:
		require.Contains(t, got.Strings(0), "sut_uj_per_event")
		require.Contains(t, got.Strings(3), "estimated", "the model's figures are marked estimated")
	case board == "greenflow-experiment" && strings.HasPrefix(what, `panel "Energy per event`):
		// The example's configurations have one repetition each: no
		// confidence interval or variation, shown empty rather than nan.
		n := slices.Index(got.Columns, "n")
		for _, row := range got.Rows {
			for i, v := range row {
				f, ok := number(v)
				require.False(t, ok && math.IsNaN(f), "%s: %s is nan (row %v)", what, got.Columns[i], row)
			}
			if count, _ := number(row[n]); count < 2 {
				for _, c := range []string{"ci_low", "ci_high", "cv"} {
					if i := slices.Index(got.Columns, c); i >= 0 {
						require.Nil(t, row[i], "%s: %s of a configuration of %v run(s)", what, c, count)
					}
				}
			}
		}
	case board == "greenflow-nodes" && what == `panel "Power per node and zone by source" query 1`:
		// The model's one zone is the node total again: drawn once.
		require.False(t, slices.ContainsFunc(got.Strings(1), func(s string) bool { return strings.Contains(s, "/"+energy.ModelZone+" · ") }),
			"the model's zone %q duplicates the node total: %v", energy.ModelZone, got.Strings(1))
		require.True(t, slices.ContainsFunc(got.Strings(1), func(s string) bool { return strings.Contains(s, " · model") }),
			"the node totals of the model are drawn: %v", got.Strings(1))
	case board == "greenflow-run" && what == `panel "Offered and delivered load" query 2`:
		times := got.Strings(0)
		require.True(t, slices.IsSorted(times), "%s: the offered rate's points in time order: %v", what, times)
	case board == "greenflow-experiment" && what == `panel "Runs and states" query 1`:
		require.Contains(t, got.Strings(4), events.RunStateDone)
		for _, row := range got.Rows {
			require.Positive(t, row[8], "the run detail link's from_ms")
			require.Greater(t, row[9], row[8], "the run detail link's to_ms")
		}
	case board == "greenflow-experiment" && what == `panel "Energy per event by factor level" query 1`:
		// examples/uc3-local.yaml sweeps workload.sensors over 500 and 2000:
		// levels in numeric order, not as text.
		require.Equal(t, "workload.sensors", got.Strings(0)[0])
		if len(got.Rows) == 2 {
			require.Equal(t, []string{"500", "2000"}, got.Strings(1))
		}
	}
}

// requirePhasesApart checks the phase annotations as a user sees them:
// each phase drawn once, in its own milliseconds, so consecutive phases
// meet but do not overlap.
func requirePhasesApart(t *testing.T, name string, got result) {
	t.Helper()
	type span struct{ from, to int64 }
	var spans []span
	ms := func(v any) int64 {
		if at, ok := v.(time.Time); ok {
			return at.UnixMilli()
		}
		f, ok := number(v)
		require.True(t, ok, "annotation %s: a time of %T, expected a DateTime or a number (ms)", name, v)
		return int64(f)
	}
	for _, row := range got.Rows {
		spans = append(spans, span{ms(row[0]), ms(row[1])})
	}
	for i := 1; i < len(spans); i++ {
		require.LessOrEqual(t, spans[i-1].to, spans[i].from, "annotation %s: %s [%d, %d] overlaps %s [%d, %d]", name,
			got.Rows[i-1][2], spans[i-1].from, spans[i-1].to, got.Rows[i][2], spans[i].from, spans[i].to)
	}
}

// checkSLOLineStartsAtTheFit runs the lag panel's SLO line with an
// interval that does not divide the fit's start, so its first interval
// would begin before it: the line must start at the fit's start or later
// (before it, the lag at the fit's start minus the slope, it went
// negative).
func checkSLOLineStartsAtTheFit(ctx context.Context, t *testing.T, reader *store.Store, board dashboards.Board, env dashboards.Env) {
	t.Helper()
	var sql string
	for _, q := range board.Queries() {
		if q.What == `panel "Consumer lag and the lag-trend SLO" query 2` {
			sql = q.SQL
		}
	}
	require.NotEmpty(t, sql, "the SLO line's query")
	run := env.Vars["run"].Values[0]
	var fitStart int64
	require.NoError(t, reader.Conn().QueryRow(ctx, `
		SELECT toInt64(intDiv(min(start_ms), 1000)) + toInt64((SELECT argMax(value, analyzed_ms) FROM results
		  WHERE run_id = ? AND scope = 'run' AND subject = '' AND metric = ?))
		FROM run_phases FINAL WHERE run_id = ? AND phase = ?`, run, results.LagTrendFitStartS, run, store.PhaseWindow).Scan(&fitStart))
	step := int64(2)
	for fitStart%step == 0 {
		step++
	}
	env.Interval = time.Duration(step) * time.Second
	got := runQuery(ctx, t, reader, "SLO line", sql, env)
	require.NotEmpty(t, got.Rows, "SLO line at a %ds interval", step)
	for _, row := range got.Rows {
		at := row[0].(time.Time).Unix()
		require.GreaterOrEqual(t, at, fitStart, "SLO line at a %ds interval: a point at %d, before the fit's start %d (%v)", step, at, fitStart, row)
		bound, _ := number(row[1])
		require.GreaterOrEqual(t, bound, 0.0, "SLO line: negative bound %v at %d", bound, at)
	}
}

// number is v as a float64 when it is a number (or a non-nil pointer to one).
func number(v any) (float64, bool) {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return 0, false
		}
		rv = rv.Elem()
	}
	switch {
	case rv.CanInt():
		return float64(rv.Int()), true
	case rv.CanUint():
		return float64(rv.Uint()), true
	case rv.CanFloat():
		return rv.Float(), true
	}
	return 0, false
}

type timing struct {
	board, what string
	took        time.Duration
	rows        int
}

func timingOf(board, what string, r result) timing {
	return timing{board: board, what: what, took: r.Took, rows: len(r.Rows)}
}

type result = dashboards.Result

// requireTimeSeries checks what the plugin's time-series format needs: a
// DateTime column named time, at least one number, labels as strings.
func requireTimeSeries(t *testing.T, what string, r result) {
	t.Helper()
	numbers := 0
	for i, c := range r.Columns {
		typ := r.Types[i]
		switch {
		case c == "time":
			require.True(t, strings.HasPrefix(typ, "DateTime"), "%s: time is %s, expected a DateTime", what, typ)
		case numeric.MatchString(typ):
			numbers++
		default:
			require.Equal(t, "String", typ, "%s: column %s is %s, expected a number or a label", what, c, typ)
		}
	}
	require.Contains(t, r.Columns, "time", what)
	require.Positive(t, numbers, "%s: no numeric column", what)
}

var numeric = regexp.MustCompile(`^(U?Int(8|16|32|64)|Float(32|64))$`)

// runQuery runs sql for env as Grafana and the plugin would.
func runQuery(ctx context.Context, t *testing.T, s *store.Store, what, sql string, env dashboards.Env) result {
	t.Helper()
	r, err := dashboards.Run(ctx, s.Conn(), sql, env)
	require.NoError(t, err, what)
	return r
}

var (
	promMetric = regexp.MustCompile(`greenflow_[a-z0-9_]+`)
	promBy     = regexp.MustCompile(`by \(([^)]*)\)`)
)

// checkPromQL requires every metric a Prometheus panel queries to be one
// the dev stack's services registered (and gathered after the run), and
// every label it groups by to be one of its labels or a scrape label.
func checkPromQL(t *testing.T, gather func() ([]*dto.MetricFamily, error)) {
	t.Helper()
	fams, err := gather()
	require.NoError(t, err)
	labels := map[string]map[string]bool{}
	for _, f := range fams {
		set := map[string]bool{"instance": true, "job": true}
		if f.GetType() == dto.MetricType_HISTOGRAM {
			set["le"] = true
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				set[l.GetName()] = true
			}
		}
		labels[f.GetName()] = set
	}
	checked := 0
	for _, board := range dashboards.Boards() {
		for _, p := range board.Panels {
			for _, q := range p.PromQL {
				for _, name := range promMetric.FindAllString(q.Expr, -1) {
					family := name
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, ok := strings.CutSuffix(name, suffix); ok && labels[base] != nil {
							family = base
						}
					}
					set, ok := labels[family]
					require.True(t, ok, "panel %q queries %s, which no service registered", p.Title, name)
					for _, by := range promBy.FindAllStringSubmatch(q.Expr, -1) {
						for _, l := range strings.Split(by[1], ",") {
							require.True(t, set[strings.TrimSpace(l)], "panel %q groups %s by %q, not one of its labels %v", p.Title, family, l, set)
						}
					}
					checked++
				}
			}
		}
	}
	require.Positive(t, checked)
}
