package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kubeapply"
)

// Provision deploys run p and waits until it is ready. Repeating it for a
// deployed run re-applies the same objects and returns the same targets; a
// failed provision deletes what it created. Transient API errors are
// retried with back-off until the run's ready timeout; past it, the error
// is marked transient.
func (b *Backend) Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error) {
	ns := b.Namespace(p.RunID)
	objs, err := Render(p, ns)
	if err != nil {
		return nil, err
	}
	k := kubeSUT(p)
	timeout := b.cfg.ReadyTimeout
	if k.ReadyTimeoutMs > 0 {
		timeout = time.Duration(k.ReadyTimeoutMs) * time.Millisecond
	}
	deadline := b.clock.Now().Add(timeout)
	resolved, err := b.resolve(ctx, deadline, p.SUT.Template, objs)
	if err != nil {
		return nil, err
	}
	var previous []string
	var existing *corev1.Namespace
	err = b.retry(ctx, deadline, "get namespace "+ns, func() error {
		var err error
		existing, err = b.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("get namespace %s: %w", ns, explain(err))
	case existing.DeletionTimestamp != nil:
		return nil, fmt.Errorf("namespace %s of run %s is still terminating from an earlier teardown; the run cannot be deployed again until it is gone", ns, p.RunID)
	case existing.Annotations[AnnotationRunID] != p.RunID:
		return nil, fmt.Errorf("namespace %s exists but belongs to run %q, not %s", ns, existing.Annotations[AnnotationRunID], p.RunID)
	default:
		if v := existing.Annotations[AnnotationPlacement]; v != "" {
			previous = strings.Split(v, ",")
		}
	}
	pl, err := b.choosePlacement(ctx, deadline, k.Placement, previous)
	if err != nil {
		return nil, err
	}
	targets, err := b.deploy(ctx, p, ns, resolved, pl, deadline, timeout)
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down: leave the deployment for the redelivered
			// provision of the next provisioner to carry on with.
			return nil, fmt.Errorf("provision interrupted: %w", ctx.Err())
		}
		b.cleanup(ns, p.RunID, err)
		return nil, err
	}
	return targets, nil
}

// resolve maps every rendered object to its resource; kinds the cluster does
// not serve and cluster-scoped kinds are refused before anything is created.
func (b *Backend) resolve(ctx context.Context, deadline time.Time, template string, objs []*unstructured.Unstructured) ([]object, error) {
	out := make([]object, 0, len(objs))
	for i, u := range objs {
		gvk := u.GroupVersionKind()
		var m *meta.RESTMapping
		err := b.retry(ctx, deadline, "discover "+gvk.Kind, func() error {
			var err error
			m, err = b.mapper.Mapping(gvk)
			if IsTransient(err) {
				b.mapper.Reset() // the discovery cache keeps a failure until reset
				m, err = b.mapper.Mapping(gvk)
			}
			return err
		})
		if err != nil {
			if meta.IsNoMatchError(err) {
				return nil, fmt.Errorf("template %s, object %d (%s): unknown kind: the cluster serves no %s in %s", template, i+1, kubeapply.Describe(u), gvk.Kind, gvk.GroupVersion())
			}
			return nil, fmt.Errorf("template %s, object %d (%s): discover its resource: %w", template, i+1, kubeapply.Describe(u), err)
		}
		if m.Scope.Name() != meta.RESTScopeNameNamespace {
			return nil, fmt.Errorf("template %s, object %d (%s): %s is cluster-scoped; templates may only hold namespaced objects, which teardown removes with the run's namespace",
				template, i+1, kubeapply.Describe(u), gvk.Kind)
		}
		out = append(out, object{u: u, mapping: m})
	}
	return out, nil
}

func (b *Backend) deploy(ctx context.Context, p events.RunProvision, ns string, objs []object, pl placement, deadline time.Time,
	timeout time.Duration) ([]events.Target, error) {
	lbl := b.runLabels(p)
	ann, err := b.runAnnotations(p, pl)
	if err != nil {
		return nil, err
	}
	nsLabels := merge(lbl, podSecurityLabels(podSecurityLevel(p.SUT.Template)))
	if err := b.applyNamespace(ctx, ns, nsLabels, ann, deadline); err != nil {
		return nil, err
	}
	workloads, err := b.applyObjects(ctx, ns, objs, lbl, pl, kubeSUT(p).Env, deadline)
	if err != nil {
		return nil, err
	}
	b.logger.Info("applied", zap.String("run_id", p.RunID), zap.String("namespace", ns), zap.Int("objects", len(objs)),
		zap.Strings("nodes", pl.nodes), zap.String("strategy", pl.strategy))
	targets, pods, err := b.waitReady(ctx, ns, lbl, workloads, deadline, timeout)
	if err != nil {
		return nil, err
	}
	// Restarts before readiness (slow dependencies, image warm-up) are not
	// crashes during the run: keep the counts at readiness as the baseline.
	base, err := json.Marshal(restartCounts(pods))
	if err != nil {
		return nil, err
	}
	ann[AnnotationReady] = string(base)
	if err := b.applyNamespace(ctx, ns, nsLabels, ann, deadline); err != nil {
		return nil, err
	}
	return targets, nil
}

// runAnnotations are what the run's namespace carries so that a restarted
// provisioner, or the sweep, knows the run: its ids, template, topics,
// installation and pinned nodes.
func (b *Backend) runAnnotations(p events.RunProvision, pl placement) (map[string]string, error) {
	kafka, err := json.Marshal(p.Kafka)
	if err != nil {
		return nil, err
	}
	ann := map[string]string{AnnotationRunID: p.RunID, AnnotationExpID: p.ExperimentID, AnnotationTemplate: p.SUT.Template,
		AnnotationKafka: string(kafka)}
	if id := b.platformID(); id != "" {
		ann[AnnotationPlatform] = id
	}
	if len(pl.nodes) > 0 {
		ann[AnnotationPlacement] = strings.Join(pl.nodes, ",")
	}
	return ann, nil
}

// applyNamespace applies the run's namespace with its labels and
// annotations (server-side, retried until deadline).
func (b *Backend) applyNamespace(ctx context.Context, ns string, lbl, ann map[string]string, deadline time.Time) error {
	nsAC := corev1ac.Namespace(ns).WithLabels(lbl).WithAnnotations(ann)
	if err := b.retry(ctx, deadline, "apply namespace "+ns, func() error {
		_, err := b.cs.CoreV1().Namespaces().Apply(ctx, nsAC, metav1.ApplyOptions{FieldManager: b.cfg.FieldManager, Force: true})
		return err
	}); err != nil {
		return fmt.Errorf("apply namespace %s: %w", ns, explain(err))
	}
	return nil
}

// applyObjects applies the run's objects into ns, labelled and with their
// pod templates placed, and returns the workloads among them.
func (b *Backend) applyObjects(ctx context.Context, ns string, objs []object, lbl map[string]string, pl placement, env map[string]string,
	deadline time.Time) ([]object, error) {
	var workloads []object
	for _, o := range objs {
		u := o.u.DeepCopy()
		u.SetNamespace(ns)
		u.SetLabels(merge(u.GetLabels(), lbl))
		isWorkload, err := mutatePodTemplate(u, lbl, pl, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kubeapply.Describe(u), err)
		}
		if err := b.retry(ctx, deadline, "apply "+kubeapply.Describe(u), func() error {
			_, err := b.dyn.Resource(o.mapping.Resource).Namespace(ns).Apply(ctx, u.GetName(), u,
				metav1.ApplyOptions{FieldManager: b.cfg.FieldManager, Force: true})
			return err
		}); err != nil {
			return nil, fmt.Errorf("apply %s: %w", kubeapply.Describe(u), explain(err))
		}
		if isWorkload {
			workloads = append(workloads, object{u: u, mapping: o.mapping})
		}
	}
	return workloads, nil
}

// cleanup deletes the namespace of a failed provision, so nothing is left;
// transient API errors are retried for a while, and what still fails is
// left to the provisioner's reconciler, which keeps trying.
func (b *Backend) cleanup(ns, runID string, cause error) {
	b.Unwatch(runID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.retry(ctx, b.clock.Now().Add(30*time.Second), "delete namespace "+ns, func() error {
		err := b.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		b.logger.Warn("failed provision: delete namespace failed; the reconciler keeps trying", zap.String("run_id", runID),
			zap.String("namespace", ns), zap.NamedError("cause", cause), zap.Error(explain(err)))
		return
	}
	b.logger.Warn("failed provision: namespace deleted", zap.String("run_id", runID), zap.String("namespace", ns), zap.NamedError("cause", cause))
}
