package events_test

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

// The registry agrees with the schema files: every version of every entry
// has its schema, every schema file belongs to an entry, every Go type
// reports its own type, every command has one consuming service.
func TestRegistryAgreesWithTheSchemaFiles(t *testing.T) {
	require.NoError(t, events.Check(events.Entries(), events.EmbeddedSchemas()))
}

// schemaFiles copies the embedded schema files into a map a test can
// change.
func schemaFiles(t testing.TB) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	names, err := fs.Glob(events.EmbeddedSchemas(), "*.json")
	require.NoError(t, err)
	for _, n := range names {
		b, err := fs.ReadFile(events.EmbeddedSchemas(), n)
		require.NoError(t, err)
		out[n] = &fstest.MapFile{Data: b}
	}
	return out
}

// entry returns the index of t in reg.
func entry(t testing.TB, reg []events.Entry, typ events.Type) int {
	t.Helper()
	for i, e := range reg {
		if e.Type == typ {
			return i
		}
	}
	t.Fatalf("no entry %s", typ)
	return -1
}

// changeEntry is a case's change of the registry entry of typ.
func changeEntry(t testing.TB, typ events.Type, change func(e *events.Entry)) func([]events.Entry, fstest.MapFS) []events.Entry {
	return func(reg []events.Entry, _ fstest.MapFS) []events.Entry {
		change(&reg[entry(t, reg, typ)])
		return reg
	}
}

// Each piece of an event missing or wrong makes Check fail, naming it.
func TestCheckFindsEveryMissingPiece(t *testing.T) {
	cases := []struct {
		name   string
		change func(reg []events.Entry, files fstest.MapFS) []events.Entry
		want   string
	}{
		{"schema file missing", func(reg []events.Entry, files fstest.MapFS) []events.Entry {
			delete(files, "run.state.v1.json")
			return reg
		}, "run.state: version 1 has no schema file run.state.v1.json"},
		{"new version without its schema", changeEntry(t, events.TypeLoadStop, func(e *events.Entry) { e.Versions = append(e.Versions, 2) }),
			"load.stop: version 2 has no schema file load.stop.v2.json"},
		{"schema file without an entry", func(reg []events.Entry, files fstest.MapFS) []events.Entry {
			files["run.paused.v1.json"] = files["load.stop.v1.json"]
			return reg
		}, "schema file run.paused.v1.json: no registry entry declares it"},
		{"schema that does not compile", func(reg []events.Entry, files fstest.MapFS) []events.Entry {
			files["load.stop.v1.json"] = &fstest.MapFile{Data: []byte(`{"$ref": "common.v1.json#/$defs/nothing"}`)}
			return reg
		}, "compile schema for load.stop/v1"},
		{"entry without a Go type", changeEntry(t, events.TypeLoadStop, func(e *events.Entry) { e.New = nil }), "load.stop: no Go type"},
		{"Go type of another message", changeEntry(t, events.TypeLoadStop, func(e *events.Entry) { e.New = func() events.Message { return &events.LoadStart{} } }),
			"load.stop: Go type *events.LoadStart reports type load.start"},
		{"declared twice", func(reg []events.Entry, _ fstest.MapFS) []events.Entry {
			return append(reg, reg[entry(t, reg, events.TypeLoadStop)])
		}, "load.stop: declared twice"},
		{"versions out of order", changeEntry(t, events.TypeRunMeasured, func(e *events.Entry) { e.Versions = []int{2, 1} }),
			"run.measured: versions [2 1]: expected ascending"},
		{"no kind", changeEntry(t, events.TypeLoadStop, func(e *events.Entry) { e.Kind = 0 }),
			"load.stop: kind Kind(0): expected Command or Event"},
		{"command without its consumer", changeEntry(t, events.TypeRunTeardown, func(e *events.Entry) { e.Consumers = nil }),
			"run.teardown: a command is consumed by exactly one service"},
		{"command consumed by two services", changeEntry(t, events.TypeLoadStart, func(e *events.Entry) { e.Consumers = append(e.Consumers, events.ServiceAnalyzer) }),
			"load.start: a command is consumed by exactly one service, not [load-generator analyzer]"},
		{"no producer", changeEntry(t, events.TypeRunState, func(e *events.Entry) { e.Producers = nil }), "run.state: no producer"},
		{"unknown service", changeEntry(t, events.TypeRunState, func(e *events.Entry) { e.Consumers = []events.Service{"mainframe"} }),
			`run.state: unknown service "mainframe"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := schemaFiles(t)
			reg := tc.change(events.Entries(), files)
			require.ErrorContains(t, events.Check(reg, files), tc.want)
		})
	}
	require.NoError(t, events.Check(events.Entries(), schemaFiles(t)), "the cases changed copies, not the registry")
}

// The registry's derived views: kinds, versions, consumers.
func TestRegistryViews(t *testing.T) {
	e, ok := events.Lookup(events.TypeRunTornDown)
	require.True(t, ok)
	require.Equal(t, events.Event, e.Kind)
	require.Equal(t, 2, e.Newest())
	require.Equal(t, 2, events.Version(events.TypeRunTornDown))
	require.Zero(t, events.Version("run.exploded"))
	require.Equal(t, []events.Type{events.TypeRunProvision, events.TypeRunTeardown}, events.ConsumedBy(events.ServiceProvisioner, events.Command))
	require.Equal(t, []events.Type{events.TypeRunState}, events.ConsumedBy(events.ServiceProvisioner, events.Event))
	require.Empty(t, events.ConsumedBy(events.ServiceCLI))
	require.Len(t, events.Samples(), len(events.Entries()))
}
