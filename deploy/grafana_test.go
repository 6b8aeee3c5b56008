package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/dashboards"
)

// The Grafana provisioning under deploy/grafana: the data sources have the
// uids the dashboards query, ClickHouse is read as the read-only user with
// a password from the environment (never written in the file), and the
// dashboard provider loads the generated dashboards.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, URL string
			JSONData             map[string]any    `yaml:"jsonData"`
			SecureJSONData       map[string]string `yaml:"secureJsonData"`
		}
	}
	readYAML(t, "grafana/provisioning/datasources/greenflow.yaml", &ds)
	require.Equal(t, 1, ds.APIVersion)
	byUID := map[string]int{}
	for i, d := range ds.Datasources {
		byUID[d.UID] = i
	}
	require.Contains(t, byUID, dashboards.ClickHouseUID)
	require.Contains(t, byUID, dashboards.PrometheusUID)
	ch := ds.Datasources[byUID[dashboards.ClickHouseUID]]
	require.Equal(t, dashboards.PluginID, ch.Type)
	require.Equal(t, chserver.UserReader, ch.JSONData["username"], "Grafana reads as the read-only user")
	require.Equal(t, "native", ch.JSONData["protocol"])
	pw := ch.SecureJSONData["password"]
	require.True(t, strings.HasPrefix(pw, "${") || strings.HasPrefix(pw, "$__file{"), "the password is a reference, not %q", pw)
	require.Equal(t, "prometheus", ds.Datasources[byUID[dashboards.PrometheusUID]].Type)

	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type string
			Options    struct{ Path string }
		}
	}
	readYAML(t, "grafana/provisioning/dashboards/greenflow.yaml", &prov)
	require.Equal(t, 1, prov.APIVersion)
	require.Len(t, prov.Providers, 1)
	require.Equal(t, "file", prov.Providers[0].Type)
	require.NotEmpty(t, prov.Providers[0].Options.Path)
	files, err := filepath.Glob("grafana/dashboards/*.json")
	require.NoError(t, err)
	require.Len(t, files, len(dashboards.Boards()), "the provider's directory holds every generated dashboard")
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}
