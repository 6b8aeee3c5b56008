package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// restartCounts maps "pod/container" to its restart count.
func restartCounts(pods []corev1.Pod) map[string]int32 {
	out := map[string]int32{}
	for _, p := range pods {
		for _, c := range p.Status.ContainerStatuses {
			out[p.Name+"/"+c.Name] = c.RestartCount
		}
	}
	return out
}

// readyBaseline reads a namespace's restart baseline; ok is false for a run
// that never became ready.
func readyBaseline(n *corev1.Namespace) (base map[string]int32, ok bool) {
	v, found := n.Annotations[AnnotationReady]
	if !found {
		return nil, false
	}
	if err := json.Unmarshal([]byte(v), &base); err != nil {
		return nil, false
	}
	return base, true
}

// crashReason describes containers restarted since the baseline (their
// counts at readiness) and failed pods, or "".
func crashReason(pods []corev1.Pod, base map[string]int32) string {
	var out []string
	for _, p := range pods {
		if p.Status.Phase == corev1.PodFailed {
			out = append(out, fmt.Sprintf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message))
		}
		for _, c := range p.Status.ContainerStatuses {
			n := c.RestartCount - base[p.Name+"/"+c.Name]
			if n <= 0 {
				continue
			}
			s := fmt.Sprintf("pod %s container %s restarted %d time(s)", p.Name, c.Name, n)
			if t := c.LastTerminationState.Terminated; t != nil {
				s += fmt.Sprintf(", last exit code %d (%s)", t.ExitCode, t.Reason)
			}
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}

// Watch checks a running run's pods for restarts and failures until
// Unwatch, and tells crashed about one, once (the provisioner then tears
// the run down). Every instance watches every running run, so a crash is
// noticed while any provisioner runs; a run that never became ready is not
// watched (its provision is still going on, or failed).
func (b *Backend) Watch(e state.Entry, crashed func(reason string)) {
	runID := e.Rec.RunID
	if b.watches.Start(runID, struct{}{}, func(ctx context.Context, _ struct{}) { b.watch(ctx, runID, crashed) }) {
		b.logger.Info("watching the system under test", zap.String("run_id", runID), zap.String("namespace", b.Namespace(runID)))
	}
}

// Unwatch stops watching a run.
func (b *Backend) Unwatch(runID string) { b.watches.Stop(runID) }

// watch polls the run's pods until a crash, which it reports, or until ctx
// ends. A run with nothing to watch (its namespace gone, terminating or
// never ready) stays registered without polling, so it is not watched
// again until it is unwatched.
func (b *Backend) watch(ctx context.Context, runID string, crashed func(reason string)) {
	ns := b.Namespace(runID)
	sel := LabelRun + "=" + LabelValue(runID)
	var base map[string]int32
	for poll.Sleep(ctx, b.clock, b.cfg.CrashPoll) {
		if base == nil {
			n, err := b.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				continue
			}
			var ready bool
			if err == nil {
				base, ready = readyBaseline(n)
			}
			if !ready || n.DeletionTimestamp != nil {
				<-ctx.Done()
				return
			}
		}
		pods, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			if ctx.Err() == nil {
				b.logger.Warn("crash watch: list pods failed", zap.String("run_id", runID), zap.Error(explain(err)))
			}
			continue
		}
		reason := crashReason(pods.Items, base)
		if reason == "" || ctx.Err() != nil {
			continue
		}
		b.logger.Error("system under test crashed during the run", zap.String("run_id", runID), zap.String("reason", reason))
		crashed(reason)
		return // watched again if its record stays running
	}
}
