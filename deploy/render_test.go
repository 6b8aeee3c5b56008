package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/greenflow/greenflow/pkg/kubetest"
)

// testAPIServer is the Kubernetes API server's address the tests give the
// overlays (envtest's service range is 10.0.0.0/24), as an operator sets
// their cluster's.
const testAPIServer = "10.0.0.1"

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
// API server's address in the provisioner's network policy. It returns a
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
