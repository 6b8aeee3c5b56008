package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/greenflow/greenflow/pkg/events"
)

const hostnameKey = "kubernetes.io/hostname"

// placement is a run's resolved placement: the strategy and, when the run
// is pinned to nodes, their names.
type placement struct {
	strategy     string
	nodeSelector map[string]string
	nodes        []string // hostnames the pods may use; nil: any node
}

// choosePlacement resolves the run's placement. Pinned runs (nodes > 0) get
// the first k ready, schedulable nodes matching the selector in name order,
// so that repetitions land on the same nodes; previous keeps an earlier
// choice for the same run (a repeated provision).
func (b *Backend) choosePlacement(ctx context.Context, deadline time.Time, pl events.Placement, previous []string) (placement, error) {
	out := placement{strategy: or(pl.Strategy, "any"), nodeSelector: pl.NodeSelector}
	k := pl.Nodes
	if out.strategy == "consolidate" && k == 0 {
		k = 1
	}
	if k <= 0 {
		return out, nil
	}
	if len(previous) > 0 {
		out.nodes = previous
		return out, nil
	}
	sel := labels.SelectorFromSet(pl.NodeSelector).String()
	var list *corev1.NodeList
	err := b.retry(ctx, deadline, "list nodes", func() error {
		var err error
		list, err = b.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel})
		return err
	})
	if err != nil {
		return out, fmt.Errorf("placement: list nodes: %w", explain(err))
	}
	var eligible []string
	var skipped []string
	for _, n := range list.Items {
		host := n.Labels[hostnameKey]
		if host == "" {
			host = n.Name
		}
		switch {
		case n.Spec.Unschedulable:
			skipped = append(skipped, n.Name+" (cordoned)")
		case !nodeReady(n):
			skipped = append(skipped, n.Name+" (not ready)")
		case hasNoScheduleTaint(n):
			skipped = append(skipped, n.Name+" (tainted)")
		default:
			eligible = append(eligible, host)
		}
	}
	sort.Strings(eligible)
	if len(eligible) < k {
		what := "any nodes"
		if len(pl.NodeSelector) > 0 {
			what = "nodes matching " + sel
		}
		return out, fmt.Errorf("placement: %s onto %d node(s), but only %d of %s are ready and schedulable (%s)",
			out.strategy, k, len(eligible), what, describeNodes(eligible, skipped))
	}
	out.nodes = eligible[:k]
	return out, nil
}

func describeNodes(eligible, skipped []string) string {
	parts := append(append([]string{}, eligible...), skipped...)
	if len(parts) == 0 {
		return "none found"
	}
	return strings.Join(parts, ", ")
}

// hasNoScheduleTaint reports a taint the run's pods do not tolerate (the
// templates set no tolerations), e.g. a control-plane node's.
func hasNoScheduleTaint(n corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return true
		}
	}
	return false
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apply sets the placement on a pod spec (unstructured) whose pods carry
// runLabels. spread: at most one pod more on any node than on another
// (topology spread over hostnames); consolidate: pods only on the chosen
// nodes, evenly. Everything else in the spec is left as it is.
func (pl placement) apply(spec map[string]any, runLabels map[string]string) error {
	if len(pl.nodeSelector) > 0 {
		sel, _, err := unstructured.NestedStringMap(spec, "nodeSelector")
		if err != nil {
			return fmt.Errorf("spec.template.spec.nodeSelector: %w", err)
		}
		if err := unstructured.SetNestedStringMap(spec, merge(sel, pl.nodeSelector), "nodeSelector"); err != nil {
			return err
		}
	}
	if len(pl.nodes) > 0 {
		na, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: hostnameKey, Operator: corev1.NodeSelectorOpIn, Values: append([]string{}, pl.nodes...)}}}}}})
		if err != nil {
			return err
		}
		if _, _, err := unstructured.NestedMap(spec, "affinity"); err != nil {
			return fmt.Errorf("spec.template.spec.affinity: %w", err)
		}
		if err := unstructured.SetNestedMap(spec, na, "affinity", "nodeAffinity"); err != nil {
			return err
		}
	}
	if pl.strategy == "spread" || (pl.strategy == "consolidate" && len(pl.nodes) > 1) {
		tsc, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&corev1.TopologySpreadConstraint{
			MaxSkew: 1, TopologyKey: hostnameKey, WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: runLabels},
			// Nodes the pods cannot use (tainted, cordoned) are not domains:
			// with more pods than usable nodes, they double up evenly.
			NodeTaintsPolicy: ptr(corev1.NodeInclusionPolicyHonor)})
		if err != nil {
			return err
		}
		list, _, err := unstructured.NestedSlice(spec, "topologySpreadConstraints")
		if err != nil {
			return fmt.Errorf("spec.template.spec.topologySpreadConstraints: %w", err)
		}
		if err := unstructured.SetNestedSlice(spec, append(list, tsc), "topologySpreadConstraints"); err != nil {
			return err
		}
	}
	return nil
}
