// Package cluster puts the whole platform on a Kubernetes cluster from a
// kubeconfig — `greenflow cluster up|status|down`: it makes the
// credentials (kept in a local secrets directory), creates the Secrets the
// manifests mount, renders an overlay of deploy/ with the cluster's API
// server address filled in, applies everything server-side, and waits
// until each component is ready or says which is not and why (the
// provisioner's readiness reasons, pkg/kubeready). Down removes what up
// applied and the runs' namespaces, and waits, bounded.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/kubeapply"
	"github.com/greenflow/greenflow/pkg/kubeready"
)

// FieldManager owns the fields up applies (server-side apply).
const FieldManager = "greenflow-cluster"

// Options say what to put on the cluster and how long to wait.
type Options struct {
	// Overlay is one of Overlays or a kustomization directory.
	Overlay string
	// SecretsDir keeps the credentials (made once, 0700).
	SecretsDir string
	// APIServerCIDRs bound the provisioner's egress to the Kubernetes API;
	// empty: read from the cluster (the kubernetes Service's endpoints).
	APIServerCIDRs []string
	// EgressCIDRs give the overlay's NetworkPolicies that name outside
	// addresses (by policy name) those addresses: the testbed overlay's
	// greenflow-collector-kwollect, the Grid'5000 API as the nodes resolve
	// it, from `testbed up`. A policy not named keeps its placeholder,
	// which fails closed.
	EgressCIDRs map[string][]string
	// Adjust, when set, edits the rendered objects before they are
	// applied: `testbed up` scales the testbed overlay's replicated parts
	// to the nodes it reserved (testbed.FitToNodes).
	Adjust func([]*unstructured.Unstructured) error
	// Timeout bounds the wait of up and down.
	Timeout time.Duration
	// Poll is how often readiness is read.
	Poll time.Duration
	// Progress receives a line whenever what is missing changes.
	Progress func(string)
}

// Cluster acts on one cluster as the kubeconfig's user.
type Cluster struct {
	o  Options
	cs kubernetes.Interface
	a  *kubeapply.Applier
}

// New connects to the cluster of rc; nothing is read yet.
func New(rc *rest.Config, o Options) (*Cluster, error) {
	if o.Overlay == "" {
		o.Overlay = "single-node"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	a, err := kubeapply.NewApplier(rc, FieldManager)
	if err != nil {
		return nil, err
	}
	return &Cluster{o: o, cs: cs, a: a}, nil
}

// Component is one workload (or Kafka) and what it still lacks.
type Component struct {
	Kind, Namespace, Name string
	Ready                 bool
	// Reason says what is missing ("" when ready).
	Reason string
}

func (c Component) String() string {
	s := fmt.Sprintf("%s %s/%s", strings.ToLower(c.Kind), c.Namespace, c.Name)
	if c.Ready {
		return s + ": ready"
	}
	return s + ": " + c.Reason
}

// Up applies the platform and waits until every component is ready. The
// error says which are not, and why, when the wait ends first.
func (c *Cluster) Up(ctx context.Context) ([]Component, error) {
	objs, err := c.render(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.checkKinds(objs); err != nil {
		return nil, err
	}
	creds, err := EnsureCredentials(c.o.SecretsDir)
	if err != nil {
		return nil, err
	}
	secrets, err := creds.Secrets()
	if err != nil {
		return nil, err
	}
	// Namespaces first, then the Secrets the pods mount, then the rest.
	var nss, rest []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			nss = append(nss, u)
		} else {
			rest = append(rest, u)
		}
	}
	ordered := nss
	for _, s := range secrets {
		u, err := toUnstructured(s)
		if err != nil {
			return nil, err
		}
		ordered = append(ordered, u)
	}
	ordered = append(ordered, rest...)
	c.o.Progress(fmt.Sprintf("applying %d objects (overlay %s, %d Secrets from %s)", len(ordered), c.o.Overlay, len(secrets), c.o.SecretsDir))
	if err := c.a.Apply(ctx, ordered); err != nil {
		return nil, err
	}
	return c.wait(ctx, objs)
}

// render builds the overlay with the API server's addresses.
func (c *Cluster) render(ctx context.Context) ([]*unstructured.Unstructured, error) {
	cidrs := c.o.APIServerCIDRs
	if len(cidrs) == 0 {
		var err error
		if cidrs, err = c.apiServerCIDRs(ctx); err != nil {
			return nil, err
		}
	}
	objs, err := Render(c.o.Overlay, cidrs, c.o.EgressCIDRs)
	if err != nil || c.o.Adjust == nil {
		return objs, err
	}
	if err := c.o.Adjust(objs); err != nil {
		return nil, err
	}
	return objs, nil
}

// apiServerCIDRs are the kubernetes Service's endpoint addresses, each as
// a host CIDR: where the provisioner must reach.
func (c *Cluster) apiServerCIDRs(ctx context.Context) ([]string, error) {
	list, err := c.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		return nil, fmt.Errorf("find the API server's addresses (the kubernetes Service's EndpointSlices; or give --api-server-cidr): %w", err)
	}
	var out []string
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			for _, a := range ep.Addresses {
				ip := net.ParseIP(a)
				switch {
				case ip == nil:
				case ip.To4() != nil:
					out = append(out, a+"/32")
				default:
					out = append(out, a+"/128")
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the kubernetes Service has no endpoint addresses yet; give --api-server-cidr")
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// checkKinds refuses, before anything is applied, objects whose kinds the
// cluster does not serve — Strimzi's Kafka without its operator, a
// ServiceMonitor without the Prometheus operator — naming what to install.
func (c *Cluster) checkKinds(objs []*unstructured.Unstructured) error {
	var missing []string
	seen := map[string]bool{}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		if seen[gvk.String()] {
			continue
		}
		seen[gvk.String()] = true
		ok, err := c.a.Served(u)
		if err != nil {
			return fmt.Errorf("look up %s: %w", gvk, err)
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("%s %s%s", gvk.Kind, gvk.GroupVersion(), installHint(gvk.Group)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the cluster does not serve: %s; install these first", strings.Join(missing, "; "))
	}
	return nil
}

// installHint says what serves a group's kinds.
func installHint(group string) string {
	switch group {
	case "kafka.strimzi.io":
		return " (Strimzi's operator: kubectl create -f 'https://strimzi.io/install/latest?namespace=kafka')"
	case "monitoring.coreos.com":
		return " (the Prometheus operator; or leave out the servicemonitors component)"
	}
	return ""
}

// Status reads every component of the overlay.
func (c *Cluster) Status(ctx context.Context) ([]Component, error) {
	objs, err := Render(c.o.Overlay, []string{"192.0.2.1/32"}, nil) // the addresses do not change what runs
	if err != nil {
		return nil, err
	}
	return c.status(ctx, objs)
}

func (c *Cluster) status(ctx context.Context, objs []*unstructured.Unstructured) ([]Component, error) {
	var out []Component
	for _, u := range objs {
		kind := u.GetKind()
		if kind != "Deployment" && kind != "StatefulSet" && kind != "DaemonSet" && kind != "Kafka" {
			continue
		}
		comp := Component{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
		ri, err := c.a.Resource(u)
		if err != nil {
			gvk := u.GroupVersionKind()
			comp.Reason = err.Error()
			if meta.IsNoMatchError(errors.Unwrap(err)) {
				comp.Reason = fmt.Sprintf("the cluster does not serve %s %s%s", gvk.Kind, gvk.GroupVersion(), installHint(gvk.Group))
			}
			out = append(out, comp)
			continue
		}
		live, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			comp.Reason = "not applied (run greenflow cluster up)"
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", kubeapply.Describe(u), err)
		case kind == "Kafka":
			comp.Reason = kafkaPending(live)
		default:
			// Component names the workload already.
			comp.Reason = strings.TrimPrefix(kubeready.Workload(live), strings.ToLower(kind)+" "+u.GetName()+": ")
			if comp.Reason != "" {
				comp.Reason += c.podReasons(ctx, live)
			}
		}
		comp.Ready = comp.Reason == ""
		out = append(out, comp)
	}
	return out, nil
}

// kafkaPending reads a Strimzi Kafka's Ready condition.
func kafkaPending(u *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			if m["status"] == "True" {
				return ""
			}
			return fmt.Sprintf("not ready: %v %v", m["reason"], m["message"])
		}
	}
	return "no status yet (is Strimzi's cluster operator running and watching this namespace?)"
}

// podReasons says what the workload's pods lack, with the namespace's
// latest warnings.
func (c *Cluster) podReasons(ctx context.Context, w *unstructured.Unstructured) string {
	sel, _, _ := unstructured.NestedStringMap(w.Object, "spec", "selector", "matchLabels")
	pods, err := c.cs.CoreV1().Pods(w.GetNamespace()).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		return ""
	}
	fatal, waiting := kubeready.Diagnose(pods.Items, time.Now(), 2*time.Minute)
	var parts []string
	switch {
	case fatal != "":
		parts = append(parts, fatal)
	case len(waiting) > 0:
		parts = append(parts, waiting...)
	case len(pods.Items) == 0:
		parts = append(parts, "no pods were created (is the controller manager running? are the images reachable?)")
	}
	if evs, err := c.cs.CoreV1().Events(w.GetNamespace()).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err == nil {
		var mine []corev1.Event
		for _, e := range evs.Items {
			if strings.HasPrefix(e.InvolvedObject.Name, w.GetName()) {
				mine = append(mine, e)
			}
		}
		if s := kubeready.Warnings(mine); s != "" {
			parts = append(parts, strings.TrimPrefix(s, "; "))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, "; ")
}

// wait polls until every component is ready or the timeout; progress goes
// out whenever what is missing changes.
func (c *Cluster) wait(ctx context.Context, objs []*unstructured.Unstructured) ([]Component, error) {
	// Every pass reads every component whole, even the last one: the
	// timeout ends the waiting, never a reading half done.
	deadline := time.Now().Add(c.o.Timeout)
	last := ""
	for {
		comps, err := c.status(ctx, objs)
		if err != nil {
			return nil, err
		}
		var pending []string
		for _, comp := range comps {
			if !comp.Ready {
				pending = append(pending, comp.String())
			}
		}
		if len(pending) == 0 {
			return comps, nil
		}
		if s := strings.Join(pending, "\n"); s != last {
			c.o.Progress(fmt.Sprintf("%d of %d components not ready:\n  %s", len(pending), len(comps), strings.Join(pending, "\n  ")))
			last = s
		}
		if !time.Now().Before(deadline) {
			return comps, fmt.Errorf("not ready after %s:\n  %s", c.o.Timeout, strings.Join(pending, "\n  "))
		}
		select {
		case <-ctx.Done():
			return comps, ctx.Err()
		case <-time.After(min(c.o.Poll, time.Until(deadline))):
		}
	}
}

// Down deletes what up applied — the overlay's objects, GreenFlow's two
// namespaces with the Secrets in them — and the runs' namespaces the
// provisioner left, then waits, bounded, until those namespaces are gone.
// A namespace the overlay only shares (kafka, where Strimzi's operator may
// live) stays. The credentials stay in the secrets directory.
func (c *Cluster) Down(ctx context.Context) error {
	objs, err := Render(c.o.Overlay, []string{"192.0.2.1/32"}, nil)
	if err != nil {
		return err
	}
	var deleted []string
	del := func(u *unstructured.Unstructured) error {
		ri, err := c.a.Resource(u)
		if err != nil {
			if meta.IsNoMatchError(errors.Unwrap(err)) {
				return nil // its CRD is gone: so is it
			}
			return err
		}
		policy := metav1.DeletePropagationBackground
		err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", kubeapply.Describe(u), err)
		}
		if err == nil {
			deleted = append(deleted, kubeapply.Describe(u))
		}
		return nil
	}
	// Everything but the namespaces, in reverse order; then the runs'
	// namespaces; then GreenFlow's own (which takes what is left inside).
	// Other namespaces the overlay names (kafka) may hold what the user
	// installed there (Strimzi's operator): only GreenFlow's objects in
	// them go.
	var nss []*unstructured.Unstructured
	for i := len(objs) - 1; i >= 0; i-- {
		if objs[i].GetKind() == "Namespace" {
			if n := objs[i].GetName(); n == Namespace || n == CollectorNamespace {
				nss = append(nss, objs[i])
			}
			continue
		}
		if err := del(objs[i]); err != nil {
			return err
		}
	}
	runs, err := c.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=greenflow"})
	if err != nil {
		return fmt.Errorf("list the runs' namespaces: %w", err)
	}
	for _, ns := range runs.Items {
		nss = append(nss, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns.Name}}})
	}
	for _, ns := range nss {
		if err := del(ns); err != nil {
			return err
		}
	}
	c.o.Progress(fmt.Sprintf("deleted %d objects; waiting for %d namespaces to go", len(deleted), len(nss)))
	deadline := time.Now().Add(c.o.Timeout)
	for {
		var left []string
		for _, ns := range nss {
			n, err := c.cs.CoreV1().Namespaces().Get(ctx, ns.GetName(), metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return fmt.Errorf("read namespace %s: %w", ns.GetName(), err)
			default:
				left = append(left, fmt.Sprintf("%s (%s%s)", n.Name, n.Status.Phase, namespaceBlockers(n)))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("namespaces still there after %s: %s", c.o.Timeout, strings.Join(left, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(c.o.Poll, time.Until(deadline))):
		}
	}
}

// namespaceBlockers names the namespace controller's conditions that say
// why a namespace is still terminating.
func namespaceBlockers(n *corev1.Namespace) string {
	var out []string
	for _, c := range n.Status.Conditions {
		if c.Status == corev1.ConditionTrue && c.Message != "" {
			out = append(out, c.Message)
		}
	}
	if len(out) == 0 {
		if n.Status.Phase == corev1.NamespaceTerminating {
			return ": no progress reported — is the namespace controller (kube-controller-manager) running?"
		}
		return ""
	}
	return ": " + strings.Join(out, "; ")
}
