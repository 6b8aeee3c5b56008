package kube

import (
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// mutatePodTemplate labels a workload's pods with the run and applies the
// placement and the run's extra environment; it reports whether u has pods
// (spec.template.spec.containers). It edits the object as it is
// (unstructured), so every field of the user's manifest reaches the API
// server — which rejects, naming it, a field it does not know — instead of
// being silently dropped by a round trip through client-go's types.
func mutatePodTemplate(u *unstructured.Unstructured, lbl map[string]string, pl placement, env map[string]string) (bool, error) {
	tmpl, found, err := unstructured.NestedMap(u.Object, "spec", "template")
	if err != nil || !found {
		return false, nil
	}
	spec, found, err := unstructured.NestedMap(tmpl, "spec")
	if err != nil || !found {
		return false, nil
	}
	containers, found, err := unstructured.NestedSlice(spec, "containers")
	if err != nil {
		return false, fmt.Errorf("spec.template.spec.containers: %w", err)
	}
	if !found {
		return false, nil // a template, but not of pods
	}
	podLabels, _, err := unstructured.NestedStringMap(tmpl, "metadata", "labels")
	if err != nil {
		return false, fmt.Errorf("spec.template.metadata.labels: %w", err)
	}
	if err := unstructured.SetNestedStringMap(tmpl, merge(podLabels, lbl), "metadata", "labels"); err != nil {
		return false, err
	}
	if err := pl.apply(spec, map[string]string{LabelRun: lbl[LabelRun]}); err != nil {
		return false, err
	}
	if len(env) > 0 {
		for i, c := range containers {
			cm, ok := c.(map[string]any)
			if !ok {
				return false, fmt.Errorf("spec.template.spec.containers[%d]: expected an object, got %T", i, c)
			}
			list, _, err := unstructured.NestedSlice(cm, "env")
			if err != nil {
				return false, fmt.Errorf("spec.template.spec.containers[%d].env: %w", i, err)
			}
			cm["env"] = withEnv(list, env)
		}
		if err := unstructured.SetNestedSlice(spec, containers, "containers"); err != nil {
			return false, err
		}
	}
	if err := unstructured.SetNestedMap(tmpl, spec, "spec"); err != nil {
		return false, err
	}
	return true, unstructured.SetNestedMap(u.Object, tmpl, "spec", "template")
}

// withEnv sets extra variables in a container's env list, replacing those
// of the same name (and their valueFrom).
func withEnv(list []any, extra map[string]string) []any {
	names := make([]string, 0, len(extra))
	for k := range extra {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		v := map[string]any{"name": n, "value": extra[n]}
		replaced := false
		for i, e := range list {
			if em, ok := e.(map[string]any); ok && em["name"] == n {
				list[i] = v
				replaced = true
			}
		}
		if !replaced {
			list = append(list, v)
		}
	}
	return list
}

func merge(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
