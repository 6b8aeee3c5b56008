//go:build envtest

package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/kubetest"
)

// The tests tagged envtest run against a real kube-apiserver and etcd; see
// package kubetest.
func TestMain(m *testing.M) { kubetest.Main(m) }

// warnings collects the API server's warnings (Pod Security's "would
// violate", deprecations).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// applier acts as the cluster's admin, with the API server's warnings
// collected; the vendored CRDs are installed.
func applier(t *testing.T) (*kubetest.Applier, *warnings) {
	t.Helper()
	w := &warnings{}
	rc := rest.CopyConfig(kubetest.Admin)
	rc.WarningHandler = w
	a, err := kubetest.NewApplier(rc)
	require.NoError(t, err)
	names, err := kubetest.InstallCRDs(context.Background(), kubetest.Admin, os.DirFS("."), "crds/*/*.yaml")
	require.NoError(t, err)
	require.Len(t, names, 4, "Kafka, KafkaTopic, KafkaNodePool, ServiceMonitor")
	w.take()
	return a, w
}

// withComponents is a kustomization building dir with components added.
func withComponents(t *testing.T, dir string, components ...string) string {
	t.Helper()
	tmp := t.TempDir()
	rel := func(p string) string {
		abs, err := filepath.Abs(p)
		require.NoError(t, err)
		r, err := filepath.Rel(tmp, abs)
		require.NoError(t, err)
		return r
	}
	var rels []string
	for _, c := range components {
		rels = append(rels, fmt.Sprintf("%q", rel(c)))
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%q]\ncomponents: [%s]\n", rel(dir),
		strings.Join(rels, ", "))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(k), 0o644))
	return tmp
}

// Every object each overlay renders — with the optional ServiceMonitors, Grafana
// and Scaphandre too — is applied server-side to a real kube-apiserver, Strimzi's and the
// Prometheus operator's CRDs installed first, so a wrong field, type, API
// version or a kind the cluster does not serve fails here; and Pod Security
// admission (the API server's, enforcing each namespace's labels) has
// nothing to say about any pod template but the energy collector's host
// paths, which its namespace admits and warns about.
func TestOverlaysApplyToARealAPIServer(t *testing.T) {
	a, w := applier(t)

	for _, overlay := range []string{"overlays/single-node", "overlays/testbed"} {
		for _, monitors := range []bool{false, true} {
			name := filepath.Base(overlay)
			dir := configured(t, overlay)
			if monitors {
				name += "+servicemonitors+scaphandre+grafana"
				dir = withComponents(t, dir, "components/servicemonitors", "components/scaphandre", "components/grafana")
			}
			t.Run(name, func(t *testing.T) {
				objs, err := kubetest.Decode(render(t, dir), name)
				require.NoError(t, err)
				kinds := map[string]int{}
				for _, o := range objs {
					kinds[o.GetKind()]++
				}
				require.Equal(t, 1, kinds["Kafka"], kinds)
				require.Equal(t, 1, kinds["KafkaNodePool"], kinds)
				require.Equal(t, 2, kinds["StatefulSet"], "NATS and ClickHouse: %v", kinds)
				if monitors {
					require.Equal(t, 7, kinds["Deployment"], "scheduler, provisioner, load-generator, analyzer, console, NATS's declarer and Grafana: %v", kinds)
					require.Equal(t, 6, kinds["ServiceMonitor"], kinds)
					require.Equal(t, 2, kinds["DaemonSet"], "the collector and Scaphandre: %v", kinds)
				} else {
					require.Equal(t, 6, kinds["Deployment"], "scheduler, provisioner, load-generator, analyzer, console, NATS's declarer: %v", kinds)
					require.Equal(t, 1, kinds["DaemonSet"], kinds)
				}
				if overlay == "overlays/testbed" {
					// With what `greenflow testbed up` applies beside it: each
					// collector's sources file.
					objs = append(objs, sourcesConfigMap(t))
				}
				require.NoError(t, a.Apply(context.Background(), objs))
				for _, warning := range w.take() {
					t.Logf("warning: %s", warning)
					if strings.HasPrefix(warning, `would violate PodSecurity "baseline:latest": hostPath volumes (volumes "sysclass", "proc")`) ||
						strings.HasPrefix(warning, `would violate PodSecurity "baseline:latest": hostPath volumes (volumes "proc", "powercap")`) {
						continue // the collector's and Scaphandre's meters, in the namespaces that admit them
					}
					t.Errorf("the API server warns: %s", warning)
				}
			})
		}
	}
}

// The check can fail: the API server refuses a field the CRD's schema does
// not have, and a value of the wrong type, naming them.
func TestAWrongFieldInAnOverlayFails(t *testing.T) {
	a, _ := applier(t)
	objs, err := kubetest.Decode(render(t, configured(t, "overlays/single-node")), "single-node")
	require.NoError(t, err)
	var ns, pool *unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			if o.GetName() == "kafka" {
				ns = o
			}
		case "KafkaNodePool":
			pool = o.DeepCopy()
		}
	}
	require.NoError(t, a.Apply(context.Background(), []*unstructured.Unstructured{ns}))
	typo := pool.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(typo.Object, int64(3), "spec", "replica"))
	err = a.Apply(context.Background(), []*unstructured.Unstructured{typo})
	require.ErrorContains(t, err, ".spec.replica: field not declared in schema")
	wrongType := pool.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(wrongType.Object, "three", "spec", "replicas"))
	err = a.Apply(context.Background(), []*unstructured.Unstructured{wrongType})
	require.ErrorContains(t, err, "spec.replicas")
}
