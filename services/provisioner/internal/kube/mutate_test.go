package kube

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// A field client-go's PodSpec does not know (a newer API server's, or a
// typo) reaches the API server as the user wrote it: it keeps it, or
// rejects it naming it; it is never silently dropped here.
func TestPodTemplateIsEditedInPlaceKeepingEveryField(t *testing.T) {
	t.Parallel()
	var u unstructured.Unstructured
	require.NoError(t, utilyaml.Unmarshal([]byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: sut}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: sut}}
    spec:
      futurePodField: {enabled: true}
      nodeSelector: {disk: ssd}
      affinity:
        podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}
      topologySpreadConstraints:
      - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}
      containers:
      - name: app
        image: img
        futureContainerField: 7
        env:
        - {name: KEEP, value: "1"}
        - {name: OVERRIDE, valueFrom: {secretKeyRef: {name: s, key: k}}}
`), &u.Object))
	pl := placement{strategy: "consolidate", nodes: []string{"worker-a", "worker-b"}, nodeSelector: map[string]string{"pool": "sut"}}
	isWorkload, err := mutatePodTemplate(&u, map[string]string{LabelRun: "r1", LabelManagedBy: ManagedBy}, pl, map[string]string{"OVERRIDE": "2", "NEW": "3"})
	require.NoError(t, err)
	require.True(t, isWorkload)

	spec, _, _ := unstructured.NestedMap(u.Object, "spec", "template", "spec")
	require.Equal(t, map[string]any{"enabled": true}, spec["futurePodField"], "unknown pod field kept")
	require.Equal(t, map[string]any{"disk": "ssd", "pool": "sut"}, spec["nodeSelector"])
	aff := spec["affinity"].(map[string]any)
	require.Contains(t, aff, "podAntiAffinity", "the user's other affinities are kept")
	require.Contains(t, aff, "nodeAffinity")
	tsc := spec["topologySpreadConstraints"].([]any)
	require.Len(t, tsc, 2, "the user's constraint and the spread over the chosen nodes")
	require.Equal(t, "kubernetes.io/hostname", tsc[1].(map[string]any)["topologyKey"])
	c := spec["containers"].([]any)[0].(map[string]any)
	require.Equal(t, int64(7), c["futureContainerField"], "unknown container field kept")
	require.Equal(t, []any{
		map[string]any{"name": "KEEP", "value": "1"},
		map[string]any{"name": "OVERRIDE", "value": "2"},
		map[string]any{"name": "NEW", "value": "3"},
	}, c["env"])
	labels, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "labels")
	require.Equal(t, map[string]string{"app": "sut", LabelRun: "r1", LabelManagedBy: ManagedBy}, labels)
	replicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
	require.Equal(t, int64(2), replicas)
}

func TestATemplateWithoutContainersIsNotAWorkload(t *testing.T) {
	t.Parallel()
	u := unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Job", "metadata": map[string]any{"name": "x"},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"steps": []any{"a"}}}}}}
	isWorkload, err := mutatePodTemplate(&u, map[string]string{LabelRun: "r"}, placement{}, nil)
	require.NoError(t, err)
	require.False(t, isWorkload)
	require.Equal(t, []any{"a"}, u.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["steps"])
}
