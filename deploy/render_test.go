package deploy

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testbed"
)

// testAPIServer is the Kubernetes API server's address the tests give the
// overlays (envtest's service range is 10.0.0.0/24), as an operator sets
// their cluster's.
const testAPIServer = "10.0.0.1"

// testKwollect is the Grid'5000 API's address the tests give the testbed
// overlay's collectors, as `greenflow testbed up` fills in what the
// control node resolves api.grid5000.fr to.
const testKwollect = "172.16.63.5"

// render builds the kustomization in dir as `kubectl kustomize` does
// (kustomize's own library, in process).
func render(t testing.TB, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	out, err := rm.AsYaml()
	require.NoError(t, err)
	return out
}

// configured is dir with what an operator sets (the README's steps): the
// API server's address in the provisioner's network policy, and in the
// testbed overlay the Grid'5000 API's in the collectors'. It returns a
// kustomization directory of its own that builds dir with the change. A
// dir of "overlay+component+…" adds the optional components (paths under
// deploy) to the overlay, as an operator enables them.
func configured(t testing.TB, dir string) string {
	t.Helper()
	parts := strings.Split(dir, "+")
	tmp := t.TempDir()
	rel := func(p string) string {
		abs, err := filepath.Abs(p)
		require.NoError(t, err)
		r, err := filepath.Rel(tmp, abs) // kustomize takes relative paths only
		require.NoError(t, err)
		return fmt.Sprintf("%q", r)
	}
	var components []string
	for _, c := range parts[1:] {
		components = append(components, rel(c))
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s]
components: [%s]
patches:
  - target: {kind: NetworkPolicy, name: greenflow-provisioner-kube-api}
    patch: |-
      - {op: replace, path: /spec/egress/0/to/0/ipBlock/cidr, value: %s/32}
`, rel(parts[0]), strings.Join(components, ", "), testAPIServer)
	if parts[0] == "overlays/testbed" {
		k += fmt.Sprintf(`  - target: {kind: NetworkPolicy, name: greenflow-collector-kwollect}
    patch: |-
      - {op: replace, path: /spec/egress/0/to/0/ipBlock/cidr, value: %s/32}
`, testKwollect)
	}
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(k), 0o644))
	return tmp
}

// TestTestbedRunsTwoSchedulersAndAnalyzers: the testbed overlay runs the
// horizontal scale the failover test covers — two schedulers and two
// analyzers, each with a disruption budget that lets a drain take one at a
// time — while the single-node overlay keeps one of each.
func TestTestbedRunsTwoSchedulersAndAnalyzers(t *testing.T) {
	for overlay, want := range map[string]int64{"overlays/testbed": 2, "overlays/single-node": 1} {
		objs, err := kubetest.Decode(render(t, configured(t, overlay)), overlay)
		require.NoError(t, err)
		replicas := map[string]int64{}
		pdbs := map[string]bool{}
		for _, o := range objs {
			switch o.GetKind() {
			case "Deployment":
				n, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
				replicas[o.GetName()] = n
			case "PodDisruptionBudget":
				pdbs[o.GetName()] = true
			}
		}
		for _, name := range []string{"scheduler", "analyzer"} {
			require.Equal(t, want, replicas[name], "%s: %s replicas", overlay, name)
			require.Equal(t, want > 1, pdbs[name], "%s: %s disruption budget", overlay, name)
		}
	}
}

// standInReservation is a testbed of two system-under-test nodes, one
// with a wattmeter and one without (its BMC is read instead).
func standInReservation() testbed.Reservation {
	return testbed.Reservation{Name: "energy-a", ID: "lyon/4242", Spec: testbed.Spec{Site: "lyon", Cluster: "taurus"},
		Nodes: []testbed.Node{{Host: "taurus-1.lyon.grid5000.fr", Role: testbed.RoleControl},
			{Host: "taurus-2.lyon.grid5000.fr", Role: testbed.RoleSUT, Facts: testbed.HostFacts{Wattmeter: true}},
			{Host: "taurus-3.lyon.grid5000.fr", Role: testbed.RoleSUT}}}
}

// sourcesConfigMap is the ConfigMap `greenflow testbed up` applies for
// the collectors of standInReservation.
func sourcesConfigMap(t testing.TB) *unstructured.Unstructured {
	t.Helper()
	files, err := testbed.CollectorSources(standInReservation(), "")
	require.NoError(t, err)
	data := map[string]any{}
	for k, v := range files {
		data[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": testbed.SourcesConfigMap, "namespace": testbed.CollectorNamespace}, "data": data}}
}

// On a testbed each collector reads its own node's file of the ConfigMap
// `greenflow testbed up` writes: the overlay mounts that ConfigMap
// (optional) where --sources-file points, the file named after the node
// the pod runs on ($(NODE_NAME), the downward API's spec.nodeName), which
// is the key testbed up gives the node (its short name, k3s's
// --node-name); the policy opening Kwollect is the one testbed up fills.
func TestTestbedCollectorsReadTheirNodesSourcesFile(t *testing.T) {
	objs, err := kubetest.Decode(render(t, configured(t, "overlays/testbed")), "testbed")
	require.NoError(t, err)
	var ds appsv1.DaemonSet
	policies := map[string]bool{}
	for _, o := range objs {
		switch {
		case o.GetKind() == "DaemonSet" && o.GetName() == "energy-collector":
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds))
		case o.GetKind() == "NetworkPolicy":
			policies[o.GetNamespace()+"/"+o.GetName()] = true
		}
	}
	require.Equal(t, testbed.CollectorNamespace, ds.Namespace)
	require.True(t, policies[testbed.CollectorNamespace+"/"+testbed.KwollectPolicy], "the collectors' egress to Kwollect")
	pod := ds.Spec.Template.Spec
	var vol *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].ConfigMap != nil && pod.Volumes[i].ConfigMap.Name == testbed.SourcesConfigMap {
			vol = &pod.Volumes[i]
		}
	}
	require.NotNil(t, vol, "the sources ConfigMap mounted")
	require.True(t, *vol.ConfigMap.Optional, "optional: without it the collector measures with its local meter")
	c := pod.Containers[0]
	mounted := ""
	for _, m := range c.VolumeMounts {
		if m.Name == vol.Name {
			mounted = m.MountPath
			require.True(t, m.ReadOnly)
		}
	}
	require.Equal(t, testbed.SourcesMountDir, mounted)
	require.Contains(t, c.Env, corev1.EnvVar{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}})
	require.Contains(t, c.Args, "--node=$(NODE_NAME)")

	// The file the collector on each node opens is that node's key.
	files, err := testbed.CollectorSources(standInReservation(), "")
	require.NoError(t, err)
	require.Len(t, files, 2, "one file per node of the system under test")
	for _, node := range []string{"taurus-2", "taurus-3"} {
		var opens string
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--sources-file="); ok {
				opens = strings.ReplaceAll(v, "$(NODE_NAME)", node)
			}
		}
		require.Equal(t, testbed.SourcesMountDir, path.Dir(opens))
		require.Contains(t, files, path.Base(opens), "the collector on %s opens %s", node, opens)
		require.Contains(t, files[path.Base(opens)], "node: "+node+"\n")
	}
}
