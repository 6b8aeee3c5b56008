package results_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
)

// Every metric is fully declared: a unit, scopes the package knows, a
// producer and a meaning; names are unique by construction (All is by name).
func TestTableIsComplete(t *testing.T) {
	scopes := map[string]bool{results.ScopeRun: true, results.ScopeNode: true, results.ScopeZone: true, results.ScopeTarget: true,
		results.ScopeRole: true, results.ScopeConfig: true, results.ScopeExperiment: true}
	all := results.All()
	require.GreaterOrEqual(t, len(all), 70)
	for i, m := range all {
		if i > 0 {
			require.Less(t, all[i-1].Name, m.Name, "sorted by name, each once")
		}
		require.NotEmpty(t, m.Unit, m.Name)
		require.NotEmpty(t, m.Help, m.Name)
		require.Contains(t, []string{results.ProducerAnalyzer, results.ProducerScheduler}, m.Producer, m.Name)
		require.NotEmpty(t, m.Scopes, m.Name)
		for _, s := range m.Scopes {
			require.True(t, scopes[s], "%s: unknown scope %q", m.Name, s)
		}
		got, ok := results.Lookup(m.Name)
		require.True(t, ok)
		require.Equal(t, m, got)
		require.Equal(t, m.Unit, results.Unit(m.Name))
		require.Equal(t, m.Estimable, results.Estimable(m.Name))
	}
	_, ok := results.Lookup("no_such_metric")
	require.False(t, ok)
	require.Empty(t, results.Unit("no_such_metric"))

	for _, f := range results.Flags() {
		m, ok := results.Lookup(results.FlagMetric(f.Name))
		require.True(t, ok, f.Name)
		require.Equal(t, results.UnitBool, m.Unit)
		name, ok := results.FlagOf(m.Name)
		require.True(t, ok)
		require.Equal(t, f.Name, name)
	}
	_, ok = results.FlagOf(results.NodeEnergyJ)
	require.False(t, ok)
}

// constants maps the names of the string constants results.go declares to
// their values; names lists those of the block that declares the metric
// names (the one holding EnergyJ).
func constants(t *testing.T) (out map[string]string, names []string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "results.go", nil, 0)
	require.NoError(t, err)
	out = map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		var block []string
		for _, spec := range g.Specs {
			block = append(block, spec.(*ast.ValueSpec).Names[0].Name)
		}
		if slices.Contains(block, "EnergyJ") {
			names = block
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, err := strconv.Unquote(lit.Value)
						require.NoError(t, err)
						out[n.Name] = v
					}
				}
			}
		}
	}
	return out, names
}

// references lists, per directory below the repository root, the
// identifiers of pkg/results its non-test Go files use.
func references(t *testing.T) map[string]map[string]bool {
	t.Helper()
	root := filepath.Join("..", "..")
	out := map[string]map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		local := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"github.com/greenflow/greenflow/pkg/results"` {
				local = "results"
				if imp.Name != nil {
					local = imp.Name.Name
				}
			}
		}
		if local == "" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == local {
					dir := filepath.ToSlash(filepath.Dir(rel))
					if out[dir] == nil {
						out[dir] = map[string]bool{}
					}
					out[dir][sel.Sel.Name] = true
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	return out
}

// producerDir is where each producer's code lives.
var producerDir = map[string]string{
	results.ProducerAnalyzer:  "services/analyzer/",
	results.ProducerScheduler: "services/scheduler/",
}

// Every metric of the table is written by its producer: the constant that
// names it is used by the producer's code — so the table lists no metric
// nobody writes — and every name constant is in the table. (The analyzer's
// tests check the other way round: it writes no metric the table lacks.)
func TestEveryMetricHasAWriter(t *testing.T) {
	consts, names := constants(t)
	require.NotEmpty(t, names)
	for _, id := range names {
		_, ok := results.Lookup(consts[id])
		require.True(t, ok, "results.%s (%q) is not in the table", id, consts[id])
	}
	refs := references(t)
	ident := map[string]string{} // metric name → its constant
	for id, v := range consts {
		if _, ok := results.Lookup(v); ok {
			ident[v] = id
		}
		if _, ok := results.Lookup(results.FlagMetric(v)); ok && strings.HasPrefix(id, "Flag") {
			ident[results.FlagMetric(v)] = id
		}
	}
	usedIn := func(id, prefix string) bool {
		for dir, ids := range refs {
			if strings.HasPrefix(dir+"/", prefix) && ids[id] {
				return true
			}
		}
		return false
	}
	for _, m := range results.All() {
		id, ok := ident[m.Name]
		require.True(t, ok, "metric %s has no constant in results.go", m.Name)
		require.True(t, usedIn(id, producerDir[m.Producer]), "metric %s (results.%s) is written by nobody in %s", m.Name, id, producerDir[m.Producer])
	}
}

func TestCICrossesZero(t *testing.T) {
	require.True(t, results.CICrossesZero(results.SUTDynamicEnergyJ, -0.5), "an energy's interval below zero")
	require.False(t, results.CICrossesZero(results.SUTDynamicEnergyJ, 0.5))
	require.False(t, results.CICrossesZero(results.LagTrendSlope, -100), "a lag slope may be negative")
	for _, m := range results.All() {
		if results.Positive(m.Name) {
			require.NotEqual(t, results.UnitBool, m.Unit, "%s: a flag is no quantity", m.Name)
		}
	}
}

func TestDataQualityLeavesOutCaveats(t *testing.T) {
	got := results.DataQuality([]string{results.FlagDynamicEnergyNegative, results.FlagEnergyGapBridged, results.FlagLagVerdictUnresolved})
	if len(got) != 1 || got[0] != results.FlagEnergyGapBridged {
		t.Fatalf("DataQuality = %v, want only %s", got, results.FlagEnergyGapBridged)
	}
	if got := results.DataQuality([]string{results.FlagMetric(results.FlagDynamicEnergyNegative), results.FlagMetric(results.FlagLoadMissed)}); len(got) != 1 {
		t.Fatalf("DataQuality of result-row names = %v, want only the missed records' row", got)
	}
	if !results.Caveat(results.FlagDynamicEnergyNegative) || results.Caveat(results.FlagLoadMissed) {
		t.Fatal("Caveat: a negative dynamic energy is one, missed records are not")
	}
}
