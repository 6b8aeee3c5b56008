package dashboards_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/dashboards"
)

func deployDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "grafana", "dashboards")
}

// The JSON under deploy/grafana/dashboards is what the generator writes:
// a change to the dashboards' code needs `go run ./tools/dashboards`.
func TestCheckedInDashboardsAreTheGeneratorsOutput(t *testing.T) {
	want, err := dashboards.Render()
	require.NoError(t, err)
	dir := deployDir()
	have, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	var names []string
	for _, f := range have {
		names = append(names, filepath.Base(f))
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	sort.Strings(wantNames)
	require.Equal(t, wantNames, names, "dashboards in %s: run go run ./tools/dashboards", dir)
	for n, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, n))
		require.NoError(t, err)
		require.Equal(t, string(b), string(got), "%s differs from the generator's output: run go run ./tools/dashboards", n)
	}
}

func TestExpand(t *testing.T) {
	env := dashboards.Env{
		From: time.Unix(1_760_000_000, 0), To: time.Unix(1_760_003_600, 0), Interval: 15 * time.Second,
		Vars: map[string]dashboards.Var{
			"experiment": {Values: []string{"e-1"}},
			"run":        {Values: []string{"it's"}},
			"node":       {Values: []string{"n1", "n2"}, All: true, Multi: true},
			"config":     {Values: []string{"c1"}, Multi: true},
		},
	}
	for _, c := range []struct {
		name, in, want, err string
		env                 map[string]dashboards.Var
	}{
		{name: "time filter and range", in: "WHERE $__timeFilter(ts) AND x < $__toTime AND y > $__fromTime",
			want: "WHERE ts >= toDateTime(1760000000) AND ts <= toDateTime(1760003600) AND x < toDateTime(1760003600) AND y > toDateTime(1760000000)"},
		{name: "interval in seconds", in: "intDiv(toUInt32(ts), $__interval_s) * $__interval_s", want: "intDiv(toUInt32(ts), 15) * 15"},
		{name: "single value raw, or quoted by format", in: "a = '$experiment' AND b = ${experiment:singlequote} AND c = ${run:singlequote}",
			want: `a = 'e-1' AND b = 'e-1' AND c = 'it\'s'`},
		// Grafana's singlequote format escapes ' as \' and nothing else: a
		// backslash before a quote turns it into \\' and ends the literal
		// (why the variables take no custom value).
		{name: "singlequote leaves backslashes as Grafana does", in: "c = ${run:singlequote}",
			env: map[string]dashboards.Var{"run": {Values: []string{`x\' OR 1 --`}}}, want: `c = 'x\\' OR 1 --'`},
		{name: "multi value quoted by the plugin", in: "node IN ($node) AND c IN (${config})", want: "node IN ('n1','n2') AND c IN ('c1')"},
		{name: "conditionalAll with All", in: "WHERE $__conditionalAll(node IN (${node:singlequote}), $node) AND 1", want: "WHERE 1=1 AND 1"},
		{name: "conditionalAll with values", in: "WHERE $__conditionalAll(c IN (${config:singlequote}), ${config})", want: "WHERE c IN ('c1')"},
		{name: "unknown variable", in: "x = $nope", err: `variable "nope" has no value`},
		{name: "18.16 lacks toStartOfInterval", in: "SELECT $__timeInterval(ts)", err: "expands to SQL ClickHouse 18.16 lacks"},
		{name: "millisecond macros", in: "WHERE $__timeFilter_ms(ts)", err: "expands to SQL ClickHouse 18.16 lacks"},
		{name: "unknown macro", in: "WHERE $__bogus", err: "macro $__bogus: not one Expand implements"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := env
			if c.env != nil {
				e.Vars = c.env
			}
			got, err := dashboards.Expand(c.in, e)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

// No query uses what ClickHouse 18.16 lacks or current releases refuse.
func TestQueriesArePortable(t *testing.T) {
	require.ErrorContains(t, dashboards.Lint("SELECT runningDifference(v) FROM t"), "runningDifference")
	require.ErrorContains(t, dashboards.Lint("SELECT toStartOfInterval(ts, INTERVAL 1 minute)"), "toStartOfInterval")
	require.ErrorContains(t, dashboards.Lint("SELECT 2 AS t UNION ALL SELECT 1 AS t ORDER BY t"), "orders only its last SELECT")
	require.ErrorContains(t, dashboards.Lint("SELECT * FROM (SELECT 2 AS t UNION ALL SELECT 1 AS t ORDER BY t)"), "orders only its last SELECT")
	require.NoError(t, dashboards.Lint("SELECT t FROM (SELECT 2 AS t UNION ALL SELECT 1 AS t) ORDER BY t"))
	require.NoError(t, dashboards.Lint("SELECT 'UNION ALL' AS s ORDER BY s"))
	n := 0
	for _, b := range dashboards.Boards() {
		var sqls []string
		for _, v := range b.Vars {
			sqls = append(sqls, v.SQL)
		}
		for _, a := range b.Annotations {
			sqls = append(sqls, a.SQL)
		}
		for _, q := range b.Queries() {
			sqls = append(sqls, q.SQL)
		}
		for _, s := range sqls {
			require.NoError(t, dashboards.Lint(s), "%s: %s", b.UID, s)
			n++
		}
	}
	require.Greater(t, n, 20)
}

// The checked-in JSON reads back with the SDK (with our query type
// registered), and every ClickHouse target is our Query, valid.
func TestDashboardsDecodeWithTheSDK(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	cog.NewRuntime().RegisterDataqueryVariant(dashboards.VariantConfig())
	files, err := filepath.Glob(filepath.Join(deployDir(), "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	queries := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d dashboard.Dashboard
		// Not UnmarshalJSONStrict: in v0.0.22 a panel's strict decoder
		// returns an empty BuildErrors as a non-nil error, so every panel
		// fails. The queries are validated below instead.
		require.NoError(t, json.Unmarshal(b, &d), f)
		for _, p := range d.Panels {
			require.NotNil(t, p.Panel, f)
			for _, target := range p.Panel.Targets {
				if q, ok := target.(dashboards.Query); ok {
					require.NoError(t, q.Validate(), f)
					queries++
				}
			}
		}
	}
	require.Greater(t, queries, 20)
}

// element is a panel or a template variable of a checked-in dashboard, as
// plain JSON (what Grafana reads), with the file it is in.
type element struct {
	file string
	v    map[string]any
}

// panelsOf lists the panels of type typ of every checked-in dashboard.
func panelsOf(t *testing.T, typ string) []element {
	t.Helper()
	panels, _ := panelsAndVars(t)
	return slices.DeleteFunc(panels, func(p element) bool { return p.v["type"] != typ })
}

// panelsAndVars reads every checked-in dashboard's panels and template
// variables.
func panelsAndVars(t *testing.T) (panels, vars []element) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir(), "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d struct {
			Panels     []map[string]any `json:"panels"`
			Templating struct {
				List []map[string]any `json:"list"`
			} `json:"templating"`
		}
		require.NoError(t, json.Unmarshal(b, &d), f)
		for _, p := range d.Panels {
			panels = append(panels, element{filepath.Base(f), p})
		}
		for _, v := range d.Templating.List {
			vars = append(vars, element{filepath.Base(f), v})
		}
	}
	return panels, vars
}

// Every time series shows its legend and a tooltip of all series, largest
// first: the series' names are what tell them apart and what marks a
// figure "(estimated)".
func TestTimeSeriesShowLegendAndTooltip(t *testing.T) {
	series := panelsOf(t, "timeseries")
	require.Greater(t, len(series), 10)
	for _, e := range series {
		f, p := e.file, e.v
		opts, _ := p["options"].(map[string]any)
		require.NotNil(t, opts, "%s panel %q: no options", f, p["title"])
		legend, _ := opts["legend"].(map[string]any)
		tooltip, _ := opts["tooltip"].(map[string]any)
		require.Equal(t, true, legend["showLegend"], "%s panel %q: legend hidden", f, p["title"])
		require.Equal(t, "list", legend["displayMode"], "%s panel %q", f, p["title"])
		require.Equal(t, "bottom", legend["placement"], "%s panel %q", f, p["title"])
		require.Equal(t, "multi", tooltip["mode"], "%s panel %q: tooltip mode", f, p["title"])
		require.Equal(t, "desc", tooltip["sort"], "%s panel %q: tooltip sort", f, p["title"])
	}
}

// No variable takes a typed value: Grafana's :singlequote escapes ' but
// not \ (see TestExpand), so only the query's own options may reach SQL.
func TestVariablesTakeNoCustomValue(t *testing.T) {
	_, vars := panelsAndVars(t)
	require.Greater(t, len(vars), 5)
	for _, v := range vars {
		require.Equal(t, false, v.v["allowCustomValue"], "%s variable %q allows a custom value", v.file, v.v["name"])
	}
}

// A table's columns hold different quantities: no unit for the whole
// table, and the energy-per-event tables put µJ on the energy columns only
// (not on n, ci_level, cv or cv_flag).
func TestTableUnitsArePerColumn(t *testing.T) {
	energyTables := 0
	for _, e := range panelsOf(t, "table") {
		f, p := e.file, e.v
		var fc struct {
			Defaults  map[string]any `json:"defaults"`
			Overrides []struct {
				Matcher    struct{ ID, Options string } `json:"matcher"`
				Properties []struct {
					ID    string `json:"id"`
					Value any    `json:"value"`
				} `json:"properties"`
			} `json:"overrides"`
		}
		b, err := json.Marshal(p["fieldConfig"])
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &fc))
		require.Empty(t, fc.Defaults["unit"], "%s table %q: a unit for every column", f, p["title"])
		units := map[string]any{}
		for _, o := range fc.Overrides {
			for _, prop := range o.Properties {
				if prop.ID == "unit" {
					require.Equal(t, "byName", o.Matcher.ID)
					units[o.Matcher.Options] = prop.Value
				}
			}
		}
		if strings.HasPrefix(p["title"].(string), "Energy per event") && f == "greenflow-experiment.json" {
			require.Equal(t, map[string]any{"mean": "µJ", "ci_low": "µJ", "ci_high": "µJ"}, units, "%s table %q", f, p["title"])
			energyTables++
		}
	}
	require.Equal(t, 2, energyTables)
}
