package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/dashboards"
	"github.com/greenflow/greenflow/pkg/kubetest"
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

// The Grafana component mounts the provisioning and every generated
// dashboard (the checked-in files, byte for byte) from the ConfigMaps it
// generates, and takes the reader's password from its Secret.
func TestGrafanaComponentMountsTheDashboards(t *testing.T) {
	objs, err := kubetest.Decode(render(t, configured(t, "overlays/single-node+components/grafana")), "grafana")
	require.NoError(t, err)
	configMaps := map[string]map[string]string{}
	var pod corev1.PodSpec
	for _, o := range objs {
		switch {
		case o.GetKind() == "ConfigMap":
			data, _, _ := unstructured.NestedStringMap(o.Object, "data")
			configMaps[o.GetName()] = data
		case o.GetKind() == "Deployment" && o.GetName() == "grafana":
			var d appsv1.Deployment
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d))
			pod = d.Spec.Template.Spec
		}
	}
	require.Len(t, pod.Containers, 1, "a grafana Deployment")
	mounted := map[string]map[string]string{} // mount path → files
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		data, ok := configMaps[v.ConfigMap.Name]
		require.True(t, ok, "volume %s: ConfigMap %s is not rendered", v.Name, v.ConfigMap.Name)
		for _, m := range pod.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				mounted[m.MountPath] = data
			}
		}
	}
	files, err := filepath.Glob("grafana/dashboards/*.json")
	require.NoError(t, err)
	require.Len(t, mounted["/var/lib/grafana/dashboards/greenflow"], len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.Equal(t, string(b), mounted["/var/lib/grafana/dashboards/greenflow"][filepath.Base(f)], f)
	}
	var prov struct {
		Providers []struct{ Options struct{ Path string } }
	}
	readYAML(t, "grafana/provisioning/dashboards/greenflow.yaml", &prov)
	require.Contains(t, mounted, prov.Providers[0].Options.Path, "the dashboards are where the provider reads them")
	require.Contains(t, mounted["/etc/grafana/provisioning/datasources"], "greenflow.yaml")
	require.Contains(t, mounted["/etc/grafana/provisioning/dashboards"], "greenflow.yaml")
	var password *corev1.EnvVarSource
	for _, e := range pod.Containers[0].Env {
		if e.Name == "GREENFLOW_CLICKHOUSE_READER_PASSWORD" {
			password = e.ValueFrom
		}
	}
	require.NotNil(t, password)
	require.NotNil(t, password.SecretKeyRef, "the reader's password from a Secret")
	require.Equal(t, "greenflow-clickhouse-reader", password.SecretKeyRef.Name)
}
