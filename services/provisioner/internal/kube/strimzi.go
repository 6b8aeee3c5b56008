package kube

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
)

// KafkaTopicKind is Strimzi's topic resource.
var KafkaTopicKind = schema.GroupVersionKind{Group: "kafka.strimzi.io", Version: "v1beta2", Kind: "KafkaTopic"}

// strimzi returns the KafkaTopic resource when topics are Strimzi's: a Kafka
// cluster is configured and the cluster serves the CRD. ok is false when
// topics are left to kadm.
func (b *Backend) strimzi() (mapping *meta.RESTMapping, ok bool, err error) {
	if b.cfg.StrimziKafka == "" {
		return nil, false, nil
	}
	m, err := b.mapper.Mapping(KafkaTopicKind)
	if meta.IsNoMatchError(err) {
		return nil, false, fmt.Errorf("strimzi: --strimzi-kafka is %s but the cluster serves no KafkaTopic in kafka.strimzi.io/v1beta2 (install Strimzi, or unset it to create topics with the Kafka admin API)", b.cfg.StrimziKafka)
	}
	if err != nil {
		err = fmt.Errorf("strimzi: discover KafkaTopic: %w", err)
		if IsTransient(err) {
			err = transientError{err}
		}
		return nil, false, err
	}
	return m, true, nil
}

func (b *Backend) strimziTarget() (ns, cluster string) {
	ns, cluster, _ = strings.Cut(b.cfg.StrimziKafka, "/")
	return ns, cluster
}

// ManagesTopics reports whether this backend creates the run's topics as
// Strimzi KafkaTopic resources instead of the provisioner using kadm.
func (b *Backend) ManagesTopics() (bool, error) {
	_, ok, err := b.strimzi()
	return ok, err
}

var (
	dnsSubdomainRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
	notDNSSubdomainRE = regexp.MustCompile(`[^a-z0-9.-]+`)
)

// kafkaTopicName is the resource name of a topic: the topic itself when it
// is a valid object name, else a sanitized form with a hash.
func kafkaTopicName(topic string) string {
	if dnsSubdomainRE.MatchString(topic) {
		return topic
	}
	s := strings.Trim(notDNSSubdomainRE.ReplaceAllString(strings.ToLower(topic), "-"), "-.")
	return shorten(s, topic, 253)
}

// CreateTopics applies a KafkaTopic per run topic, labelled with the run, and
// waits until Strimzi's topic operator reports each Ready.
func (b *Backend) CreateTopics(ctx context.Context, p events.RunProvision) error {
	m, ok, err := b.strimzi()
	if err != nil || !ok {
		return err
	}
	ns, cluster := b.strimziTarget()
	deadline := b.clock.Now().Add(b.cfg.ReadyTimeout)
	lbl := merge(b.runLabels(p), map[string]string{"strimzi.io/cluster": cluster})
	var names []string
	for _, topic := range []string{p.Kafka.InputTopic, p.Kafka.OutputTopic} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(KafkaTopicKind)
		u.SetName(kafkaTopicName(topic))
		u.SetNamespace(ns)
		u.SetLabels(lbl)
		u.SetAnnotations(map[string]string{AnnotationRunID: p.RunID})
		spec := map[string]any{"topicName": topic, "partitions": int64(max(p.Kafka.Partitions, 1))}
		if b.cfg.TopicReplicas > 0 {
			spec["replicas"] = int64(b.cfg.TopicReplicas)
		}
		u.Object["spec"] = spec
		if err := b.retry(ctx, deadline, "apply KafkaTopic "+u.GetName(), func() error {
			_, err := b.dyn.Resource(m.Resource).Namespace(ns).Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: b.cfg.FieldManager, Force: true})
			return err
		}); err != nil {
			return fmt.Errorf("apply KafkaTopic %s/%s: %w", ns, u.GetName(), explain(err))
		}
		names = append(names, u.GetName())
	}
	for _, name := range names {
		for {
			var u *unstructured.Unstructured
			err := b.retry(ctx, deadline, "get KafkaTopic "+name, func() error {
				var err error
				u, err = b.dyn.Resource(m.Resource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
				return err
			})
			if err != nil {
				return fmt.Errorf("get KafkaTopic %s/%s: %w", ns, name, explain(err))
			}
			status, reason, msg := readyCondition(u)
			if status == "True" {
				break
			}
			if status == "False" {
				return fmt.Errorf("KafkaTopic %s/%s is not ready: %s: %s", ns, name, reason, msg)
			}
			if b.clock.Now().After(deadline) {
				return fmt.Errorf("KafkaTopic %s/%s not ready after %s: is Strimzi's topic operator running for Kafka cluster %s?", ns, name, b.cfg.ReadyTimeout, cluster)
			}
			if !poll.Sleep(ctx, b.clock, b.cfg.PollInterval) {
				return ctx.Err()
			}
		}
	}
	b.logger.Info("kafka topics ready", zap.String("run_id", p.RunID), zap.String("namespace", ns), zap.Strings("kafkatopics", names))
	return nil
}

// DeleteTopics deletes the run's KafkaTopic resources (found by label, so it
// works after a restart); the topic operator deletes the topics.
func (b *Backend) DeleteTopics(ctx context.Context, runID string) error {
	m, ok, err := b.strimzi()
	if err != nil || !ok {
		return err
	}
	ns, _ := b.strimziTarget()
	deadline := b.clock.Now().Add(b.cfg.TeardownTimeout)
	var list *unstructured.UnstructuredList
	err = b.retry(ctx, deadline, "list KafkaTopics", func() error {
		var err error
		list, err = b.dyn.Resource(m.Resource).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + LabelValue(runID)})
		return err
	})
	if err != nil {
		return fmt.Errorf("list KafkaTopics of run %s in %s: %w", runID, ns, explain(err))
	}
	for _, u := range list.Items {
		if u.GetAnnotations()[AnnotationRunID] != runID {
			continue
		}
		err := b.retry(ctx, deadline, "delete KafkaTopic "+u.GetName(), func() error {
			err := b.dyn.Resource(m.Resource).Namespace(ns).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("delete KafkaTopic %s/%s: %w", ns, u.GetName(), explain(err))
		}
	}
	return nil
}

func readyCondition(u *unstructured.Unstructured) (status, reason, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		cm, _ := c.(map[string]any)
		if cm["type"] == "Ready" {
			s, _ := cm["status"].(string)
			r, _ := cm["reason"].(string)
			m, _ := cm["message"].(string)
			return s, r, m
		}
	}
	return "", "", ""
}
