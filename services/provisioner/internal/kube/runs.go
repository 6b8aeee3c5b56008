package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Deployed is a run found in the cluster.
type Deployed struct {
	ExperimentID, RunID, Namespace, Template string
	Terminating                              bool
	// Platform is the installation that deployed it ("" for a namespace
	// of a provisioner from before platform ids).
	Platform string
	Created  time.Time
	Kafka    *events.Kafka
}

// Runs lists the runs deployed in the cluster, read from namespace labels
// and annotations.
func (b *Backend) Runs(ctx context.Context) ([]Deployed, error) {
	var list *corev1.NamespaceList
	err := b.retry(ctx, b.clock.Now().Add(b.cfg.TeardownTimeout), "list run namespaces", func() error {
		var err error
		list, err = b.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy + "," + LabelRun})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list run namespaces: %w", explain(err))
	}
	out := make([]Deployed, 0, len(list.Items))
	for _, n := range list.Items {
		d := Deployed{ExperimentID: n.Annotations[AnnotationExpID], RunID: n.Annotations[AnnotationRunID], Namespace: n.Name,
			Template: n.Annotations[AnnotationTemplate], Terminating: n.DeletionTimestamp != nil, Platform: n.Annotations[AnnotationPlatform],
			Created: n.CreationTimestamp.Time}
		var k events.Kafka
		if v := n.Annotations[AnnotationKafka]; v != "" && json.Unmarshal([]byte(v), &k) == nil {
			d.Kafka = &k
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RunID < out[j].RunID })
	return out, nil
}

// Leftovers lists the runs whose namespaces are in the cluster.
func (b *Backend) Leftovers(ctx context.Context) ([]state.Leftover, error) {
	runs, err := b.Runs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]state.Leftover, 0, len(runs))
	for _, r := range runs {
		if r.RunID == "" {
			continue
		}
		out = append(out, state.Leftover{RunID: r.RunID, ExperimentID: r.ExperimentID, Platform: r.Platform, Since: r.Created, Kafka: r.Kafka,
			Kind: "namespace", What: "namespace " + r.Namespace, Terminating: r.Terminating})
	}
	return out, nil
}
