package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubeapply"
	"github.com/greenflow/greenflow/pkg/kubeready"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
)

// waitReady waits until every workload has its replicas ready, then returns
// one target per container of the run's pods. It fails early, with the
// reason, on image pull errors, crash loops and pods unschedulable for longer
// than the grace; at the deadline it says what was still missing. The API
// server being unavailable for a while only delays it: the wait goes on
// until the deadline, and a failure then is marked transient.
func (b *Backend) waitReady(ctx context.Context, ns string, lbl map[string]string, workloads []object, deadline time.Time,
	timeout time.Duration) ([]events.Target, []corev1.Pod, error) {
	sel := labels.SelectorFromSet(map[string]string{LabelRun: lbl[LabelRun]}).String()
	var unavailable error
	for {
		pending, pods, err := b.readiness(ctx, ns, sel, workloads)
		switch {
		case err != nil && !b.transient(err):
			return nil, nil, err
		case err != nil:
			if unavailable == nil {
				b.logger.Warn("kubernetes API unavailable during the readiness wait; waiting on", zap.String("namespace", ns), zap.Error(err))
			}
			unavailable = err
			if !b.clock.Now().Before(deadline) {
				return nil, nil, transientError{fmt.Errorf("namespace %s: readiness unknown after %s: the API server is unavailable: %w", ns, timeout, err)}
			}
		default:
			if unavailable != nil {
				b.logger.Info("kubernetes API available again", zap.String("namespace", ns))
				unavailable = nil
			}
			fatal, waiting := b.diagnose(pods)
			if fatal == "" && len(pending) > 0 {
				if refused := b.refused(ctx, ns); refused != "" {
					return nil, nil, fmt.Errorf("namespace %s: %s", ns, refused)
				}
			}
			if fatal != "" {
				return nil, nil, fmt.Errorf("namespace %s: %s%s", ns, fatal, b.warnings(ctx, ns))
			}
			if len(pending) == 0 {
				return podTargets(pods), pods, nil
			}
			if !b.clock.Now().Before(deadline) {
				detail := strings.Join(pending, "; ")
				if len(waiting) > 0 {
					detail += "; " + strings.Join(waiting, "; ")
				} else if len(pods) == 0 {
					detail += "; no pods were created (is the controller manager running?)"
				}
				return nil, nil, fmt.Errorf("namespace %s: not ready after %s: %s%s", ns, timeout, detail, b.warnings(ctx, ns))
			}
		}
		if !poll.Sleep(ctx, b.clock, b.cfg.PollInterval) {
			return nil, nil, ctx.Err()
		}
	}
}

// readiness reads what each workload still lacks and the run's pods.
func (b *Backend) readiness(ctx context.Context, ns, sel string, workloads []object) ([]string, []corev1.Pod, error) {
	var pending []string
	for _, w := range workloads {
		msg, err := b.workloadPending(ctx, w)
		if err != nil {
			return nil, nil, err
		}
		if msg != "" {
			pending = append(pending, msg)
		}
	}
	pods, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, nil, fmt.Errorf("list pods in %s: %w", ns, explain(err))
	}
	return pending, pods.Items, nil
}

// workloadPending says what a workload still lacks, or "" when it is ready.
func (b *Backend) workloadPending(ctx context.Context, w object) (string, error) {
	u, err := b.dyn.Resource(w.mapping.Resource).Namespace(w.u.GetNamespace()).Get(ctx, w.u.GetName(), metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get %s: %w", kubeapply.Describe(w.u), explain(err))
	}
	return kubeready.Workload(u), nil
}

// diagnose finds a fatal pod problem, and describes pods not yet ready.
func (b *Backend) diagnose(pods []corev1.Pod) (fatal string, waiting []string) {
	return kubeready.Diagnose(pods, b.clock.Now(), b.cfg.UnschedulableGrace)
}

// refused finds a pod the API server refused to create because it breaks
// the namespace's Pod Security level (podSecurityLevel), as the workload's
// controller reports it: a FailedCreate warning event. Such a refusal does
// not heal by waiting, so the provision fails on it at once, with the
// API server's reason, instead of at the ready timeout. Other create
// failures (a quota) may heal and are left to the timeout's report.
func (b *Backend) refused(ctx context.Context, ns string) string {
	list, err := b.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning,reason=FailedCreate"})
	if err != nil {
		return "" // the next poll asks again; the deadline bounds it
	}
	for _, e := range list.Items {
		if strings.Contains(e.Message, "violates PodSecurity") {
			return fmt.Sprintf("%s %s: the API server refuses its pods (Pod Security admission, at the level the run's namespace enforces): %s",
				strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, e.Message)
		}
	}
	return ""
}

// warnings lists the namespace's latest warning events, for error messages.
func (b *Backend) warnings(ctx context.Context, ns string) string {
	list, err := b.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		return ""
	}
	return kubeready.Warnings(list.Items)
}

// podTargets is one target per container of each ready pod.
func podTargets(pods []corev1.Pod) []events.Target {
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	var out []events.Target
	for _, p := range pods {
		if p.DeletionTimestamp != nil || !kubeready.PodReady(p) {
			continue
		}
		cs := append([]corev1.ContainerStatus{}, p.Status.ContainerStatuses...)
		sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
		for _, c := range cs {
			out = append(out, events.Target{ID: "pod/" + p.Namespace + "/" + p.Name + "/" + c.Name, Kind: "pod", Node: p.Spec.NodeName,
				Role: "sut", Namespace: p.Namespace, Pod: p.Name, ContainerID: c.ContainerID})
		}
	}
	return out
}
