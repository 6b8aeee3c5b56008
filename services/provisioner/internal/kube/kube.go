// Package kube is the provisioner's kubernetes backend: it deploys a run's
// system under test into a namespace of its own with server-side apply,
// waits for it to be ready, reports its pods as measurement targets, and
// deletes the namespace at teardown. Everything it knows about a run is read
// back from the cluster (labels and annotations), so a restarted provisioner
// carries on where the last one stopped.
package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Labels and annotations the backend puts on what it creates.
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedBy           = "greenflow"
	LabelExperiment     = "greenflow.dev/experiment"
	LabelRun            = "greenflow.dev/run"
	AnnotationRunID     = "greenflow.dev/run-id"
	AnnotationExpID     = "greenflow.dev/experiment-id"
	AnnotationTemplate  = "greenflow.dev/template"
	AnnotationPlacement = "greenflow.dev/placement-nodes"
	// AnnotationReady holds each container's restart count when the run
	// became ready ({"pod/container": n}); its presence marks a ready run.
	AnnotationReady = "greenflow.dev/ready-restarts"
	// AnnotationKafka records the run's brokers and topics (JSON), so that a
	// restarted provisioner can delete the topics of a run that crashed.
	AnnotationKafka = "greenflow.dev/kafka"
	// AnnotationPlatform names the installation that deployed the run (see
	// state.Store.Platform): the reconciler only removes its own.
	AnnotationPlatform = "greenflow.dev/platform"
)

// Config configures the backend.
type Config struct {
	// Kubeconfig and Context choose the cluster; empty Kubeconfig means
	// $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
	Kubeconfig string `yaml:"kubeconfig"`
	Context    string `yaml:"context"`
	// FieldManager names this provisioner in server-side apply.
	FieldManager string `yaml:"fieldManager"`
	// NamespacePrefix starts every run namespace's name.
	NamespacePrefix string `yaml:"namespacePrefix"`
	// ReadyTimeout bounds the wait for readiness (a run's
	// sut.kubernetes.readyTimeout overrides it).
	ReadyTimeout time.Duration `yaml:"readyTimeout"`
	// UnschedulableGrace is how long a pod may stay unschedulable before the
	// provision fails (a cluster autoscaler may add a node meanwhile).
	UnschedulableGrace time.Duration `yaml:"unschedulableGrace"`
	// TeardownTimeout bounds the wait for a deleted namespace to go.
	TeardownTimeout time.Duration `yaml:"teardownTimeout"`
	// PollInterval is how often readiness and deletion are checked.
	PollInterval time.Duration `yaml:"pollInterval"`
	// StrimziKafka, as namespace/name, is the Strimzi Kafka cluster whose
	// topic operator creates the run's topics from KafkaTopic resources;
	// empty: the provisioner creates topics with the Kafka admin API.
	StrimziKafka string `yaml:"strimziKafka"`
	// TopicReplicas is each KafkaTopic's replication factor (0: the
	// brokers' default).
	TopicReplicas int `yaml:"topicReplicas"`
	// CrashPoll is how often a deployed run's pods are checked for
	// restarts and failures.
	CrashPoll time.Duration `yaml:"crashPoll"`
	// RetryBase is the first back-off after a transient API error (doubling
	// up to 5 s, within the phase's deadline).
	RetryBase time.Duration `yaml:"retryBase"`
	// RequestTimeout bounds one API request.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
}

func (c *Config) defaults() {
	if c.FieldManager == "" {
		c.FieldManager = "greenflow-provisioner"
	}
	if c.NamespacePrefix == "" {
		c.NamespacePrefix = "gf-"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 5 * time.Minute
	}
	if c.UnschedulableGrace == 0 {
		c.UnschedulableGrace = 30 * time.Second
	}
	if c.TeardownTimeout == 0 {
		c.TeardownTimeout = 2 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.CrashPoll == 0 {
		c.CrashPoll = 5 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = 200 * time.Millisecond
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
}

// RESTConfig loads the cluster's client configuration: an explicit
// kubeconfig, else $KUBECONFIG or ~/.kube/config, else in-cluster.
func RESTConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("kubernetes backend: kubeconfig %s: %w", kubeconfig, err)
		}
		rules.ExplicitPath = kubeconfig
	}
	found := kubeconfig != ""
	for _, p := range rules.Precedence {
		if _, err := os.Stat(p); err == nil {
			found = true
		}
	}
	if !found {
		if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			rc, err := rest.InClusterConfig()
			if err != nil {
				return nil, fmt.Errorf("kubernetes backend: in-cluster config: %w", err)
			}
			return rc, nil
		}
		home, _ := os.UserHomeDir()
		return nil, fmt.Errorf("kubernetes backend: no kubeconfig: --kubeconfig is not set, $KUBECONFIG is %q, %s does not exist, "+
			"and this is not a pod in a cluster (KUBERNETES_SERVICE_HOST is unset)", os.Getenv("KUBECONFIG"), filepath.Join(home, ".kube", "config"))
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: load kubeconfig: %w", err)
	}
	return rc, nil
}

// Backend deploys runs on one cluster; safe for concurrent use.
type Backend struct {
	cfg    Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	logger *zap.Logger
	now    func() time.Time

	onCrash  CrashFunc
	mu       sync.Mutex
	watching map[string]context.CancelFunc // run → its crash watch
	watchers sync.WaitGroup
	closed   bool
	platform string
}

// SetPlatform sets the installation id put on every run namespace.
func (b *Backend) SetPlatform(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.platform = id
}

func (b *Backend) platformID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.platform
}

// Key is the record of a kubernetes run.
func (b *Backend) Key(runID string) string { return state.KubeKey(runID) }

// Owns reports whether this backend can remove the run of rec: every
// kubernetes run (the cluster is shared).
func (b *Backend) Owns(rec state.Record) bool { return rec.Backend == "kubernetes" }

// TeardownBound is the longest one Remove may take.
func (b *Backend) TeardownBound() time.Duration { return b.cfg.TeardownTimeout + 30*time.Second }

// Remove deletes the run's namespace (see Teardown).
func (b *Backend) Remove(ctx context.Context, runID string, _ *state.Entry) (bool, string, error) {
	return b.Teardown(ctx, runID)
}

// CrashFunc is told about a run whose pods restarted or failed during the
// run. kafka names the run's topics as recorded at provision (nil if
// unknown).
type CrashFunc func(experimentID, runID, reason string, kafka *events.Kafka)

// OnCrash sets the crash handler; call it before the first provision.
func (b *Backend) OnCrash(fn CrashFunc) { b.onCrash = fn }

// New builds the backend for the cluster rc points at; no I/O.
func New(rc *rest.Config, cfg Config, logger *zap.Logger) (*Backend, error) {
	cfg.defaults()
	if cfg.StrimziKafka != "" {
		if ns, name, ok := strings.Cut(cfg.StrimziKafka, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("kubernetes backend: strimzi kafka %q: expected namespace/name of the Kafka resource", cfg.StrimziKafka)
		}
	}
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = cfg.FieldManager
	}
	if rc.Timeout == 0 {
		rc.Timeout = cfg.RequestTimeout // an API server that hangs is retried like one that is down
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	return &Backend{cfg: cfg, cs: cs, dyn: dyn, mapper: mapper, logger: logger.With(zap.String("component", "kubernetes-backend")), now: time.Now,
		watching: map[string]context.CancelFunc{}}, nil
}

var (
	labelValueRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	notLabelRE     = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	notNamespaceRE = regexp.MustCompile(`[^a-z0-9-]+`)
)

// LabelValue is id as a label value: itself when valid, else a readable
// prefix and a hash (the full id is kept in an annotation).
func LabelValue(id string) string {
	if labelValueRE.MatchString(id) {
		return id
	}
	return shorten(notLabelRE.ReplaceAllString(id, "-"), id, 63)
}

// Namespace is the namespace of run runID.
func (b *Backend) Namespace(runID string) string {
	name := b.cfg.NamespacePrefix + strings.Trim(notNamespaceRE.ReplaceAllString(strings.ToLower(runID), "-"), "-")
	if len(name) <= 63 {
		return name
	}
	return shorten(name, runID, 63)
}

// shorten cuts s to fit n characters with an 8-digit hash of full.
func shorten(s, full string, n int) string {
	sum := sha256.Sum256([]byte(full))
	h := hex.EncodeToString(sum[:4])
	s = strings.TrimRight(s[:min(len(s), n-len(h)-1)], "-._")
	s = strings.TrimLeft(s, "-._")
	return s + "-" + h
}

func (b *Backend) runLabels(p events.RunProvision) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelExperiment: LabelValue(p.ExperimentID), LabelRun: LabelValue(p.RunID)}
}

// object is a rendered object with its resource.
type object struct {
	u       *unstructured.Unstructured
	mapping *meta.RESTMapping
}

func describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return u.GetKind() + " " + u.GetName()
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
			m, err = b.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if meta.IsNoMatchError(err) || IsTransient(err) {
				b.mapper.Reset() // a CRD may have been installed since discovery was cached
				m, err = b.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			}
			return err
		})
		if err != nil {
			if meta.IsNoMatchError(err) {
				return nil, fmt.Errorf("template %s, object %d (%s): unknown kind: the cluster serves no %s in %s", template, i+1, describe(u), gvk.Kind, gvk.GroupVersion())
			}
			return nil, fmt.Errorf("template %s, object %d (%s): discover its resource: %w", template, i+1, describe(u), err)
		}
		if m.Scope.Name() != meta.RESTScopeNameNamespace {
			return nil, fmt.Errorf("template %s, object %d (%s): %s is cluster-scoped; templates may only hold namespaced objects, which teardown removes with the run's namespace",
				template, i+1, describe(u), gvk.Kind)
		}
		out = append(out, object{u: u, mapping: m})
	}
	return out, nil
}

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
	deadline := b.now().Add(timeout)
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

func (b *Backend) deploy(ctx context.Context, p events.RunProvision, ns string, objs []object, pl placement, deadline time.Time,
	timeout time.Duration) ([]events.Target, error) {
	lbl := b.runLabels(p)
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
	applyNS := func(ann map[string]string) error {
		nsAC := corev1ac.Namespace(ns).WithLabels(lbl).WithAnnotations(ann)
		if err := b.retry(ctx, deadline, "apply namespace "+ns, func() error {
			_, err := b.cs.CoreV1().Namespaces().Apply(ctx, nsAC, metav1.ApplyOptions{FieldManager: b.cfg.FieldManager, Force: true})
			return err
		}); err != nil {
			return fmt.Errorf("apply namespace %s: %w", ns, explain(err))
		}
		return nil
	}
	if err := applyNS(ann); err != nil {
		return nil, err
	}
	k := kubeSUT(p)
	var workloads []object
	for _, o := range objs {
		u := o.u.DeepCopy()
		u.SetNamespace(ns)
		u.SetLabels(merge(u.GetLabels(), lbl))
		isWorkload, err := mutatePodTemplate(u, lbl, pl, k.Env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", describe(u), err)
		}
		if err := b.retry(ctx, deadline, "apply "+describe(u), func() error {
			_, err := b.dyn.Resource(o.mapping.Resource).Namespace(ns).Apply(ctx, u.GetName(), u,
				metav1.ApplyOptions{FieldManager: b.cfg.FieldManager, Force: true})
			return err
		}); err != nil {
			return nil, fmt.Errorf("apply %s: %w", describe(u), explain(err))
		}
		if isWorkload {
			workloads = append(workloads, object{u: u, mapping: o.mapping})
		}
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
	if err := applyNS(ann); err != nil {
		return nil, err
	}
	return targets, nil
}

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

// cleanup deletes the namespace of a failed provision, so nothing is left;
// transient API errors are retried for a while, and what still fails is
// left to the provisioner's reconciler, which keeps trying.
func (b *Backend) cleanup(ns, runID string, cause error) {
	b.unwatch(runID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.retry(ctx, b.now().Add(30*time.Second), "delete namespace "+ns, func() error {
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

// explain adds what to do to an authorization failure; the API server's
// message already names the verb, the resource and the user.
func explain(err error) error {
	if apierrors.IsForbidden(err) && !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) &&
		!strings.Contains(err.Error(), "exceeded quota") {
		return fmt.Errorf("%w (the provisioner's ClusterRole, deploy/base/provisioner-rbac.yaml, grants the verbs it needs)", err)
	}
	return err
}

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
	err := b.retry(ctx, b.now().Add(b.cfg.TeardownTimeout), "list run namespaces", func() error {
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

// Teardown deletes the run's namespace and waits, bounded, for it to go.
// crashed reports containers that restarted or pods that failed during the
// run. A run the cluster does not know is already torn down. Transient API
// errors are retried with back-off within TeardownTimeout; what fails past
// it is returned (the provisioner tries again later).
func (b *Backend) Teardown(ctx context.Context, runID string) (crashed bool, reason string, err error) {
	b.unwatch(runID)
	deadline := b.now().Add(b.cfg.TeardownTimeout)
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
		if b.now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(b.cfg.PollInterval):
		}
	}
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
// Unwatch, and tells the crash handler about one (the provisioner then
// tears the run down). Every instance watches every running run, so a crash
// is noticed while any provisioner runs; a run that never became ready is
// not watched (its provision is still going on, or failed).
func (b *Backend) Watch(e state.Entry) { b.watchRun(e.Rec.ExperimentID, e.Rec.RunID) }

// Unwatch stops watching a run.
func (b *Backend) Unwatch(runID string) { b.unwatch(runID) }

func (b *Backend) watchRun(experimentID, runID string) {
	if b.onCrash == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.watching[runID]; ok || b.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.watching[runID] = cancel
	b.watchers.Add(1)
	go func() {
		defer b.watchers.Done()
		b.watch(ctx, experimentID, runID)
	}()
}

func (b *Backend) unwatch(runID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cancel, ok := b.watching[runID]; ok {
		cancel()
		delete(b.watching, runID)
	}
}

// Close stops every crash watch and waits for them, so that a crash being
// reported is published before the service stops; the runs stay deployed.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	for id, cancel := range b.watching {
		cancel()
		delete(b.watching, id)
	}
	b.mu.Unlock()
	b.watchers.Wait()
}

func (b *Backend) watch(ctx context.Context, experimentID, runID string) {
	ns := b.Namespace(runID)
	sel := LabelRun + "=" + LabelValue(runID)
	var base map[string]int32
	var kafka *events.Kafka
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.cfg.CrashPoll):
		}
		if base == nil {
			n, err := b.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return
			}
			if err != nil {
				continue
			}
			var ready bool
			if base, ready = readyBaseline(n); !ready || n.DeletionTimestamp != nil {
				return
			}
			var k events.Kafka
			if json.Unmarshal([]byte(n.Annotations[AnnotationKafka]), &k) == nil {
				kafka = &k
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
		b.onCrash(experimentID, runID, reason, kafka)
		b.unwatch(runID) // watched again if its record stays running
		return
	}
}
