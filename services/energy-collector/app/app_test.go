package app_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/energy-collector/app"
)

func TestSourcesFileFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
- {kind: model, node: here}
- {id: k1, kind: kepler, node: worker-1, url: "http://worker-1:28282/metrics", nodeLabel: worker-1}
- kind: promql
  node: worker-3
  url: http://prometheus:9090
  nodeQuery: kepler_node_cpu_joules_total{node_name="worker-3",zone=~"package|dram"}
`), 0o600))
	fs := flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	cfg := app.Service.Default()
	require.NoError(t, app.Service.RegisterFlags(fs, &cfg))
	require.NoError(t, fs.Parse([]string{"--sources-file", path, "--spool-dir", "/var/spool/gf", "--instance", "c1"}))
	require.Len(t, cfg.Sources, 3)
	require.Equal(t, app.SourceConfig{ID: "k1", Kind: "kepler", Node: "worker-1", URL: "http://worker-1:28282/metrics", NodeLabel: "worker-1"}, cfg.Sources[1])
	require.Equal(t, `kepler_node_cpu_joules_total{node_name="worker-3",zone=~"package|dram"}`, cfg.Sources[2].NodeQuery)
	require.Equal(t, "/var/spool/gf", cfg.SpoolDir)
	require.NoError(t, cfg.Validate())

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("kind: [nope"), 0o600))
	fs = flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	fs.SetOutput(discard{})
	require.NoError(t, app.Service.RegisterFlags(fs, &cfg))
	require.ErrorContains(t, fs.Parse([]string{"--sources-file", bad}), "parse sources file")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// A standalone collector keeps a spool of its own instance unless told
// otherwise, so a restarted one continues exactly without a flag; an empty
// --spool-dir keeps rows in memory.
func TestSpoolDirDefaultsToTheInstancesStateDir(t *testing.T) {
	t.Setenv("HOME", "/home/u")
	fs := flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	cfg := app.Service.Default()
	require.NoError(t, app.Service.RegisterFlags(fs, &cfg))
	require.NoError(t, fs.Parse([]string{"--instance", "c/1"}))
	require.Equal(t, "auto", cfg.SpoolDir)
	require.Equal(t, "/home/u/.local/state/greenflow/energy-collector/c_1", app.DefaultSpoolDir(cfg.Instance))

	fs = flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	cfg = app.Service.Default()
	require.NoError(t, app.Service.RegisterFlags(fs, &cfg))
	require.NoError(t, fs.Parse([]string{"--spool-dir", ""}))
	require.Empty(t, cfg.SpoolDir)
}
