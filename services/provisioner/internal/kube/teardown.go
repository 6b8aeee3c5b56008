package kube

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Remove deletes the run's namespace and waits, bounded, for it to go
// (the record e is not needed: the namespace carries all there is).
// crashed reports containers that restarted or pods that failed during the
// run. A run the cluster does not know is already torn down. Transient API
// errors are retried with back-off within TeardownTimeout; what fails past
// it is returned (the provisioner tries again later).
func (b *Backend) Remove(ctx context.Context, runID string, _ *state.Entry) (crashed bool, reason string, err error) {
	b.Unwatch(runID)
	deadline := b.clock.Now().Add(b.cfg.TeardownTimeout)
	var list *corev1.NamespaceList
	if err := b.retry(ctx, deadline, "find the namespace of run "+runID, func() error {
		var err error
		list, err = b.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy + "," + LabelRun + "=" + LabelValue(runID)})
		return err
	}); err != nil {
		return false, "", fmt.Errorf("find the namespace of run %s: %w", runID, explain(err))
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.Annotations[AnnotationRunID] != runID {
			continue
		}
		ns := n.Name
		if n.DeletionTimestamp == nil {
			var pods *corev1.PodList
			if err := b.retry(ctx, deadline, "list pods in "+ns, func() error {
				var err error
				pods, err = b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
				return err
			}); err != nil {
				return false, "", fmt.Errorf("list pods in %s: %w", ns, explain(err))
			}
			base, _ := readyBaseline(n)
			if r := crashReason(pods.Items, base); r != "" {
				crashed, reason = true, r
			}
		}
		if err := b.retry(ctx, deadline, "delete namespace "+ns, func() error {
			err := b.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}); err != nil {
			return crashed, reason, fmt.Errorf("delete namespace %s: %w", ns, explain(err))
		}
		if gone := b.waitGone(ctx, ns, deadline); !gone {
			b.logger.Warn("namespace still terminating after the teardown bound; the cluster finishes deleting it",
				zap.String("run_id", runID), zap.String("namespace", ns), zap.Duration("waited", b.cfg.TeardownTimeout))
		}
	}
	return crashed, reason, nil
}

// waitGone waits until the namespace is gone or the deadline; the API
// server being briefly unavailable meanwhile does not end the wait.
func (b *Backend) waitGone(ctx context.Context, ns string, deadline time.Time) bool {
	for {
		_, err := b.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true
		}
		if b.clock.Now().After(deadline) || !poll.Sleep(ctx, b.clock, b.cfg.PollInterval) {
			return false
		}
	}
}
