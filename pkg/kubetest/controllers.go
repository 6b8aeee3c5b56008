package kubetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RunNamespaces selects the namespaces GreenFlow's provisioner creates, one
// per run.
const RunNamespaces = "app.kubernetes.io/managed-by=greenflow"

// Controllers plays, for GreenFlow's run namespaces, what a cluster's
// controller manager, scheduler and kubelets do: a Kubelet for every run
// namespace that appears (its pods created, bound and made ready), and the
// namespace controller's part in a deletion — the namespace's objects are
// removed and the namespace finalized, so a deleted namespace is really
// gone, as on a cluster, instead of staying Terminating forever. Every
// step goes through the API server, so an outage stops the stand-ins too.
type Controllers struct {
	CS    kubernetes.Interface
	Nodes []string
	Log   Logger
	// Poll is how often namespaces are listed (default 100 ms).
	Poll time.Duration

	mu       sync.Mutex
	kubelets map[string]context.CancelFunc // namespace → its kubelet
	holds    []*Hold                       // waiting for the next namespace, in order
	held     map[string]*Hold              // namespace → its hold
}

// Hold keeps the kubelet away from one run namespace — its pods are never
// created, so the run waits for readiness — until Release.
type Hold struct {
	c        *Controllers
	mu       sync.Mutex
	ns       string
	seen     chan struct{}
	released bool
}

// HoldNext holds the next run namespace that appears (the one after every
// earlier hold got its namespace).
func (c *Controllers) HoldNext() *Hold {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &Hold{c: c, seen: make(chan struct{})}
	c.holds = append(c.holds, h)
	return h
}

// Seen is closed once the hold has its namespace.
func (h *Hold) Seen() <-chan struct{} { return h.seen }

// Namespace is the held namespace, "" before it appeared.
func (h *Hold) Namespace() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ns
}

// Release lets the kubelet work in the held namespace from the next poll
// on; a hold that has no namespace yet is withdrawn.
func (h *Hold) Release() {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.mu.Lock()
	h.released = true
	h.mu.Unlock()
	for i, x := range h.c.holds {
		if x == h {
			h.c.holds = append(h.c.holds[:i], h.c.holds[i+1:]...)
			break
		}
	}
}

func (h *Hold) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.released
}

// Run works until ctx ends.
func (c *Controllers) Run(ctx context.Context) {
	poll := c.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	c.mu.Lock()
	c.kubelets, c.held = map[string]context.CancelFunc{}, map[string]*Hold{}
	c.mu.Unlock()
	lastErr := ""
	for ctx.Err() == nil {
		err := c.step(ctx)
		// An outage is reported once, not every poll.
		if msg := fmt.Sprint(err); err != nil && msg != lastErr && ctx.Err() == nil {
			c.Log.Logf("kube controllers: %v", err)
		}
		lastErr = fmt.Sprint(err)
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, stop := range c.kubelets {
		stop()
	}
}

func (c *Controllers) step(ctx context.Context) error {
	list, err := c.CS.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: RunNamespaces})
	if err != nil {
		return fmt.Errorf("list run namespaces: %w", err)
	}
	var errs []error
	for i := range list.Items {
		n := &list.Items[i]
		if n.DeletionTimestamp != nil {
			c.stopKubelet(n.Name)
			if err := c.finalize(ctx, n); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		c.startKubelet(ctx, n.Name)
	}
	return errors.Join(errs...)
}

// startKubelet starts the namespace's kubelet unless it runs or a hold
// keeps it away.
func (c *Controllers) startKubelet(ctx context.Context, ns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.kubelets[ns]; ok {
		return
	}
	h, ok := c.held[ns]
	if !ok && len(c.holds) > 0 {
		h = c.holds[0]
		c.holds = c.holds[1:]
		c.held[ns] = h
		h.mu.Lock()
		h.ns = ns
		h.mu.Unlock()
		close(h.seen)
		c.Log.Logf("kube controllers: holding back the kubelet of namespace %s", ns)
	}
	if h != nil && h.active() {
		return
	}
	kctx, cancel := context.WithCancel(ctx)
	c.kubelets[ns] = cancel
	(&Kubelet{CS: c.CS, NS: ns, Nodes: c.Nodes}).Run(kctx, c.Log)
}

func (c *Controllers) stopKubelet(ns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stop, ok := c.kubelets[ns]; ok {
		stop()
		delete(c.kubelets, ns)
	}
}

// finalize does the namespace controller's work for a deleted namespace:
// its pods (at once, as a kubelet confirms a stopped pod), Deployments,
// Services and events go, then the "kubernetes" finalizer, so the API
// server removes the namespace.
func (c *Controllers) finalize(ctx context.Context, n *corev1.Namespace) error {
	ns := n.Name
	zero := int64(0)
	now := metav1.DeleteOptions{GracePeriodSeconds: &zero}
	all := metav1.ListOptions{}
	var errs []error
	if err := c.CS.CoreV1().Pods(ns).DeleteCollection(ctx, now, all); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the pods of %s: %w", ns, err))
	}
	if err := c.CS.AppsV1().Deployments(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the deployments of %s: %w", ns, err))
	}
	if svcs, err := c.CS.CoreV1().Services(ns).List(ctx, all); err == nil {
		for _, s := range svcs.Items {
			if err := c.CS.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete service %s/%s: %w", ns, s.Name, err))
			}
		}
	} else if !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("list the services of %s: %w", ns, err))
	}
	if err := c.CS.CoreV1().Events(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the events of %s: %w", ns, err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(n.Spec.Finalizers) > 0 {
		f := n.DeepCopy()
		f.Spec.Finalizers = nil
		if _, err := c.CS.CoreV1().Namespaces().Finalize(ctx, f, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("finalize namespace %s: %w", ns, err)
		}
	}
	return nil
}
