package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greenflow/greenflow/pkg/kubetest"
)

// The kube segment runs every run with sut.backend kubernetes on a real
// kube-apiserver and etcd (envtest), the provisioner pointed at it through a
// kubeconfig holding its service account's token — the least-privileged
// ClusterRole of deploy/base/provisioner-rbac.yaml, applied as deployed. No
// kubelet can run here: kubetest.Controllers plays the kubelets (pods are
// API objects, made ready) and the namespace controller (a deleted run
// namespace really goes). Its faults: the API server stopped while a run
// waits for readiness and during its teardown, and the provisioner's role
// without delete on namespaces for a run.
const (
	FaultKube       = "kube"
	TargetAPIServer = "kube-apiserver"
	TargetRBAC      = "kube-rbac" // the provisioner's role without delete on namespaces
)

// KubeFaults are the kube segment's faults, each planned Config.KubeFaults
// times.
var KubeFaults = []Pair{{TargetAPIServer, "provisioning"}, {TargetAPIServer, "teardown"}, {TargetRBAC, "teardown"}}

const (
	// kubeNode is the node every run is consolidated onto (the first
	// schedulable worker in name order); the energy collector measures this
	// machine under its name.
	kubeNode = "worker-a"
	// kubeNamespace holds the provisioner's service account.
	kubeNamespace = "greenflow"
	// managedBy selects GreenFlow's run namespaces.
	managedBy        = kubetest.RunNamespaces
	annotationRunID  = "greenflow.dev/run-id"
	kubeSUTImage     = "registry.local/uc3-processor:chaos"
	kubeRoleResource = "namespaces"
	kubeRoleVerb     = "delete"
)

// AcceptedKubeFlags: a pod that is an API object has no process, so no
// meter sees it and the analyzer flags target_unmeasured (SUT energy 0).
var AcceptedKubeFlags = []string{"target_unmeasured"}

// kubeSUT is the runs' system under test: the reference UC-3 processor's
// template, two replicas consolidated onto one node of the pool.
func kubeSUT() map[string]any {
	return map[string]any{"template": "uc3-go", "backend": "kubernetes", "kubernetes": map[string]any{
		"image": kubeSUTImage, "replicas": 2,
		"placement": map[string]any{"strategy": "consolidate", "nodes": 1, "nodeSelector": map[string]any{"pool": "sut"}}}}
}

// kubeEnv is the kube segment's cluster and the suite's view of it.
type kubeEnv struct {
	cp         *kubetest.ControlPlane
	cs         kubernetes.Interface // admin, 5 s per request
	rbac       kubetest.RBAC
	kubeconfig string
	ctl        *kubetest.Controllers
	ns         *NamespaceWatch
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	logs       []*os.File
	logf       func(format string, args ...any)
	// StopS and StartS are the API server's measured stop and start times.
	StopS, StartS []float64
}

// fileLog is a kubetest.Logger that writes timestamped lines to a file.
type fileLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *fileLog) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// startKube starts the control plane (its binaries found as `make
// test-kube` finds them), registers the nodes, applies the provisioner's
// RBAC manifest, writes its kubeconfig and starts the stand-ins.
func startKube(ctx context.Context, root, dir string, progress io.Writer, logf func(string, ...any)) (_ *kubeEnv, err error) {
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("create logs dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	assets, err := kubetest.FindAssets(ctx, root, progress)
	if err != nil {
		return nil, err
	}
	k := &kubeEnv{logf: logf}
	defer func() {
		if err != nil {
			k.Close()
		}
	}()
	cpLog, err := os.Create(filepath.Join(dir, "logs", "kube-apiserver-etcd.log"))
	if err != nil {
		return nil, fmt.Errorf("create control plane log: %w", err)
	}
	ctlLog, err := os.Create(filepath.Join(dir, "logs", "kube-controllers.log"))
	if err != nil {
		return nil, fmt.Errorf("create controllers log: %w", err)
	}
	k.logs = []*os.File{cpLog, ctlLog}
	start := time.Now()
	if k.cp, err = kubetest.StartControlPlane(assets, cpLog); err != nil {
		return nil, err
	}
	logf("segment kube: kube-apiserver and etcd (%s) up in %s", assets, time.Since(start).Round(time.Millisecond))
	rc := rest.CopyConfig(k.cp.Admin)
	rc.Timeout = 5 * time.Second
	if k.cs, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("kubernetes admin client: %w", err)
	}
	if err := kubetest.RegisterNodes(ctx, k.cs, kubetest.Workers...); err != nil {
		return nil, err
	}
	manifest := filepath.Join(root, "deploy", "base", "provisioner-rbac.yaml")
	if k.rbac, err = kubetest.ApplyRBAC(ctx, k.cs, manifest, kubeNamespace); err != nil {
		return nil, err
	}
	k.kubeconfig = filepath.Join(dir, "state", "provisioner.kubeconfig")
	if err := kubetest.ServiceAccountKubeconfig(ctx, k.cs, k.cp.Admin, k.rbac.ServiceAccount, 12*time.Hour, k.kubeconfig); err != nil {
		return nil, err
	}
	if err := k.waitAllowed(ctx, "create", true); err != nil {
		return nil, err
	}
	logf("segment kube: the provisioner runs as %s (ClusterRole %s of %s), kubeconfig %s", k.rbac.User(), k.rbac.Role.Name, manifest, k.kubeconfig)
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.cancel = cancel
	k.ctl = &kubetest.Controllers{CS: k.cs, Nodes: kubetest.Workers, Log: &fileLog{w: ctlLog}}
	k.ns = NewNamespaceWatch(k.cs)
	k.wg.Add(2)
	go func() { defer k.wg.Done(); k.ctl.Run(kctx) }()
	go func() { defer k.wg.Done(); k.ns.Run(kctx) }()
	return k, nil
}

// serviceArgs are the kube segment's service arguments on top of the
// suite's: the provisioner's kubernetes backend on, through the service
// account's kubeconfig; the collector measures this machine as the node
// the runs go to; the scheduler's provision timeout back at its default
// (2 min: the suite's 30 s would end a provision that waits out a 20 s
// outage and the API server's restart).
func (k *kubeEnv) serviceArgs() map[string][]string {
	return map[string][]string{
		"provisioner":      {"--kubernetes", "on", "--kubeconfig", k.kubeconfig},
		"energy-collector": {"--node", kubeNode},
		"scheduler":        {"--provision-timeout", "2m"},
	}
}

// Close stops the stand-ins and the control plane.
func (k *kubeEnv) Close() {
	if k.cancel != nil {
		k.cancel()
	}
	k.wg.Wait()
	if k.cp != nil {
		if err := k.cp.Stop(); err != nil {
			k.logf("segment kube: %v", err)
		}
	}
	for _, f := range k.logs {
		_ = f.Close()
	}
}

// allowed asks the API server whether the provisioner's service account may
// verb namespaces (a SubjectAccessReview, as the authorizer decides).
func (k *kubeEnv) allowed(ctx context.Context, verb string) (bool, error) {
	sa := k.rbac.ServiceAccount
	r, err := k.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: k.rbac.User(), Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Resource: kubeRoleResource}}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("ask whether %s may %s namespaces: %w", k.rbac.User(), verb, err)
	}
	return r.Status.Allowed, nil
}

// waitAllowed waits until the authorizer answers want for verb on
// namespaces (the RBAC authorizer follows role changes through a watch).
func (k *kubeEnv) waitAllowed(ctx context.Context, verb string, want bool) error {
	var got bool
	var err error
	if poll(ctx, 15*time.Second, 100*time.Millisecond, func() bool { got, err = k.allowed(ctx, verb); return err == nil && got == want }) {
		return nil
	}
	return fmt.Errorf("the authorizer still answers %v (want %v) for %s %s namespaces after 15s (last error: %v)", got, want, k.rbac.User(), verb, err)
}

// setDeleteNamespaces takes the delete verb on namespaces out of the
// provisioner's ClusterRole, or puts the role back as the manifest has it,
// and waits until the authorizer agrees.
func (k *kubeEnv) setDeleteNamespaces(ctx context.Context, allow bool) error {
	role, err := k.cs.RbacV1().ClusterRoles().Get(ctx, k.rbac.Role.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read ClusterRole %s: %w", k.rbac.Role.Name, err)
	}
	if allow {
		role.Rules = k.rbac.Role.Rules
	} else {
		role.Rules = withoutVerb(k.rbac.Role.Rules, "", kubeRoleResource, kubeRoleVerb)
	}
	if _, err := k.cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update ClusterRole %s: %w", role.Name, err)
	}
	return k.waitAllowed(ctx, kubeRoleVerb, allow)
}

// withoutVerb is rules minus one verb on one resource of one API group.
func withoutVerb(rules []rbacv1.PolicyRule, group, resource, verb string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, group) || !slices.Contains(r.Resources, resource) {
			out = append(out, *r.DeepCopy())
			continue
		}
		for _, res := range r.Resources {
			verbs := slices.Clone(r.Verbs)
			if res == resource {
				verbs = slices.DeleteFunc(verbs, func(v string) bool { return v == verb })
			}
			if len(verbs) > 0 {
				out = append(out, rbacv1.PolicyRule{APIGroups: slices.Clone(r.APIGroups), Resources: []string{res}, Verbs: verbs})
			}
		}
	}
	return out
}

// outage stops the API server, keeps it down for length (a stimulus, not a
// wait for a condition), starts it again and waits until it serves.
func (k *kubeEnv) outage(ctx context.Context, length time.Duration, rec *KillRecord) {
	t0 := time.Now()
	if err := k.cp.StopAPIServer(); err != nil {
		rec.Error = err.Error()
		return
	}
	rec.KilledAt = time.Now() // down from here: clients get connection refused
	rec.Delivered = true
	k.StopS = append(k.StopS, rec.KilledAt.Sub(t0).Seconds())
	select {
	case <-ctx.Done():
	case <-time.After(length):
	}
	rec.RestartedAt = time.Now()
	if err := k.cp.StartAPIServer(context.WithoutCancel(ctx), 90*time.Second); err != nil {
		rec.RestartError = err.Error()
		return
	}
	rec.ReadyAt = time.Now()
	k.StartS = append(k.StartS, rec.ReadyAt.Sub(rec.RestartedAt).Seconds())
	rec.DownS = rec.ReadyAt.Sub(rec.KilledAt).Seconds()
	rec.RecoverS = rec.ReadyAt.Sub(rec.RestartedAt).Seconds()
}

// ---- the run namespaces as the suite sees them ----

// NamespaceLife is what the suite saw of one run namespace, polling the API
// server every 200 ms.
type NamespaceLife struct {
	Name  string `json:"name"`
	RunID string `json:"run_id"`
	// SeenMs: first listed; DeletingMs: first listed with a deletion
	// timestamp; GoneMs: first successful listing without it (0: still
	// there at the last one).
	SeenMs     int64 `json:"seen_ms"`
	DeletingMs int64 `json:"deleting_ms,omitempty"`
	GoneMs     int64 `json:"gone_ms,omitempty"`
	// DeletionTimestamp is the API server's own (second resolution).
	DeletionTimestampMs int64 `json:"deletion_timestamp_ms,omitempty"`
}

// NamespaceWatch follows GreenFlow's run namespaces.
type NamespaceWatch struct {
	cs     kubernetes.Interface
	mu     sync.Mutex
	ns     map[string]*NamespaceLife
	lastOK time.Time
}

// NewNamespaceWatch returns an idle watch.
func NewNamespaceWatch(cs kubernetes.Interface) *NamespaceWatch {
	return &NamespaceWatch{cs: cs, ns: map[string]*NamespaceLife{}}
}

// Run polls until ctx ends; a failed listing (an outage) changes nothing.
func (w *NamespaceWatch) Run(ctx context.Context) {
	for ctx.Err() == nil {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		list, err := w.cs.CoreV1().Namespaces().List(lctx, metav1.ListOptions{LabelSelector: managedBy})
		cancel()
		if err == nil {
			now := time.Now().UnixMilli()
			w.mu.Lock()
			listed := map[string]bool{}
			for _, n := range list.Items {
				listed[n.Name] = true
				l, ok := w.ns[n.Name]
				if !ok || l.GoneMs > 0 {
					l = &NamespaceLife{Name: n.Name, RunID: n.Annotations[annotationRunID], SeenMs: now}
					w.ns[n.Name] = l
				}
				if n.DeletionTimestamp != nil && l.DeletingMs == 0 {
					l.DeletingMs, l.DeletionTimestampMs = now, n.DeletionTimestamp.UnixMilli()
				}
			}
			for name, l := range w.ns {
				if !listed[name] && l.GoneMs == 0 {
					l.GoneMs = now
				}
			}
			w.lastOK = time.Now()
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Of is what was seen of the namespaces of a run.
func (w *NamespaceWatch) Of(runID string) []NamespaceLife {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []NamespaceLife
	for _, l := range w.ns {
		if l.RunID == runID {
			out = append(out, *l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Exists reports whether a namespace with a deployment exists (the
// provisioner applied the run's objects and waits for readiness).
func (k *kubeEnv) deployed(ctx context.Context, ns string) bool {
	if ns == "" {
		return false
	}
	d, err := k.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	return err == nil && len(d.Items) > 0
}

// leftoverNamespaces lists the run namespaces of runIDs (all of them when
// runIDs is nil) that the API server still has.
func (k *kubeEnv) leftoverNamespaces(ctx context.Context, runIDs []string) ([]string, error) {
	list, err := k.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: managedBy})
	if err != nil {
		return nil, fmt.Errorf("list run namespaces: %w", err)
	}
	var out []string
	for _, n := range list.Items {
		if runIDs == nil || slices.Contains(runIDs, n.Annotations[annotationRunID]) {
			state := "Active"
			if n.DeletionTimestamp != nil {
				state = "Terminating"
			}
			out = append(out, fmt.Sprintf("%s (%s, run %s)", n.Name, state, n.Annotations[annotationRunID]))
		}
	}
	sort.Strings(out)
	return out, nil
}

// namespaceLeftovers waits up to grace for the run namespaces of runIDs
// (every one when nil) to be gone, and returns a violation for each that
// is not — confirmed when every listing over the next 2 s still has it.
// The grace covers the provisioner's documented back-off (teardown
// attempts up to a minute apart, the leftover sweep every 30 s).
func (c *segCtx) namespaceLeftovers(ctx context.Context, runIDs []string, grace time.Duration) []Violation {
	var left []string
	var err error
	if poll(ctx, grace, 500*time.Millisecond, func() bool { left, err = c.kube.leftoverNamespaces(ctx, runIDs); return err == nil && len(left) == 0 }) {
		return nil
	}
	if err != nil {
		return []Violation{{Kind: "namespace_left", Detail: fmt.Sprintf("could not check the run namespaces for %s: %v", grace, err)}}
	}
	// A listing that fails confirms nothing.
	still := confirmed(ctx, 2*time.Second, left, func() []string { again, _ := c.kube.leftoverNamespaces(ctx, runIDs); return again })
	var out []Violation
	for _, ns := range left {
		run := ns[strings.LastIndex(ns, "run ")+4 : len(ns)-1]
		out = append(out, Violation{RunID: run, Kind: "namespace_left", Confirmed: still[ns],
			Detail: fmt.Sprintf("namespace %s (labelled %s) is still in the cluster %s after its run ended", ns, managedBy, grace)})
	}
	return out
}

// ---- a kube fault in a slot ----

// kubeFault is a kube fault being delivered: what was set up before the
// run was submitted, and what undoes it whatever happens.
type kubeFault struct {
	hold   *kubetest.Hold
	cutAt  time.Time // the role lost its verb
	undone bool
}

// prepareKube sets a kube fault up before its run is submitted: the next
// run namespace's kubelet held back (a readiness fault), or the verb taken
// out of the provisioner's role.
func (c *segCtx) prepareKube(ctx context.Context, k Kill) (*kubeFault, error) {
	f := &kubeFault{}
	switch {
	case k.Target == TargetAPIServer && k.Phase == "provisioning":
		f.hold = c.kube.ctl.HoldNext()
	case k.Target == TargetRBAC:
		if err := c.kube.setDeleteNamespaces(ctx, false); err != nil {
			return nil, fmt.Errorf("take %s %s out of the provisioner's role: %w", kubeRoleVerb, kubeRoleResource, err)
		}
		f.cutAt = time.Now()
		c.logf("  the provisioner's ClusterRole %s no longer grants %s on %s", c.kube.rbac.Role.Name, kubeRoleVerb, kubeRoleResource)
	}
	return f, nil
}

// undo releases a hold and grants the verb back (once).
func (c *segCtx) undoKube(ctx context.Context, f *kubeFault, rec *KillRecord) {
	if f == nil || f.undone {
		return
	}
	f.undone = true
	if f.hold != nil {
		f.hold.Release()
	}
	if !f.cutAt.IsZero() {
		rec.RestartedAt = time.Now()
		if err := c.kube.setDeleteNamespaces(context.WithoutCancel(ctx), true); err != nil {
			rec.RestartError = err.Error()
			c.logf("  could not give the verb back: %v", err)
			return
		}
		rec.ReadyAt = time.Now()
		rec.DownS = rec.ReadyAt.Sub(f.cutAt).Seconds()
		rec.RecoverS = rec.ReadyAt.Sub(rec.RestartedAt).Seconds()
		c.logf("  the provisioner's ClusterRole grants %s on %s again", kubeRoleVerb, kubeRoleResource)
	}
}

// deliverKube waits for the run to be where the fault must hit it and
// delivers it. The phase recorded is the one the fault covered, read from
// the run's state events.
// awaitRunState waits, up to the run bound, for the first run of
// experiment id to have reached one of states or a final state; it returns
// that run ("" when none started) and whether it got there.
func (c *segCtx) awaitRunState(ctx context.Context, id string, states ...string) (string, bool) {
	var run string
	reached := c.events.Wait(ctx, c.cfg.RunBound, func() bool {
		runs := c.events.RunsOf(id)
		if len(runs) == 0 {
			return false
		}
		run = runs[0]
		for _, st := range c.events.States(run) {
			if slices.Contains(states, st.State) || finalStates[st.State] {
				return true
			}
		}
		return false
	})
	return run, reached
}

func (c *segCtx) deliverKube(ctx context.Context, k Kill, id string, f *kubeFault, rec *KillRecord) {
	first := func() string {
		if runs := c.events.RunsOf(id); len(runs) > 0 {
			return runs[0]
		}
		return ""
	}
	ended := func(run string) bool {
		st, ok := c.events.State(run)
		return ok && finalStates[st.State]
	}
	stateOf := func(run string) string { st, _ := c.events.State(run); return st.State }
	switch {
	case k.Target == TargetAPIServer && k.Phase == "provisioning":
		// The provision has applied the run's objects and waits for them to
		// become ready (the kubelet of its namespace is held back).
		var run string
		ok := c.events.Wait(ctx, c.cfg.RunBound, func() bool {
			run = first()
			select {
			case <-f.hold.Seen():
				return c.kube.deployed(ctx, f.hold.Namespace()) || (run != "" && ended(run))
			default:
				return run != "" && ended(run)
			}
		})
		if !ok || run == "" || ended(run) || stateOf(run) != "provisioning" {
			rec.NotDelivered = fmt.Sprintf("the run was not waiting for readiness (state %q)", stateOf(run))
			return
		}
		rec.PhaseObserved = stateOf(run)
		c.logf("  %s waits for readiness in %s: stopping the API server for %s", run, f.hold.Namespace(), k.RestartAfter)
		c.kube.outage(ctx, k.RestartAfter, rec)
		c.undoKube(ctx, f, rec) // the kubelet may work now that the API server is back
	case k.Target == TargetAPIServer && k.Phase == "teardown":
		// Stopped as the cool-down begins, so the API server is down when
		// the teardown starts (a stop takes about a second; the cool-down
		// is longer).
		run, _ := c.awaitRunState(ctx, id, "cooldown", "teardown")
		if run == "" || ended(run) {
			rec.NotDelivered = fmt.Sprintf("the run ended %s before its cool-down", stateOf(run))
			return
		}
		c.logf("  %s in %s: stopping the API server for %s", run, stateOf(run), k.RestartAfter)
		c.kube.outage(ctx, k.RestartAfter, rec)
		rec.PhaseObserved = c.coveredPhase(run, rec.KilledAt, rec.ReadyAt, "teardown")
	case k.Target == TargetRBAC:
		run, _ := c.awaitRunState(ctx, id, "teardown")
		var td StateSeen
		for _, st := range c.events.States(run) {
			if st.State == "teardown" {
				td = st
			}
		}
		if td.State == "" {
			rec.NotDelivered = fmt.Sprintf("the run ended %s without a teardown", stateOf(run))
			c.undoKube(ctx, f, rec)
			return
		}
		rec.Delivered, rec.KilledAt, rec.PhaseObserved = true, td.Seen, "teardown"
		c.logf("  %s entered teardown without %s on %s: waiting for it to end", run, kubeRoleVerb, kubeRoleResource)
		// The verb comes back once the run has ended (failed, the reason
		// naming the verb) — not before, or the teardown would just finish.
		c.events.Wait(ctx, c.cfg.RunBound, func() bool { return ended(run) })
		c.undoKube(ctx, f, rec)
	}
}

// coveredPhase names the phase an outage [down, up] covered for a run: the
// aimed phase when the run entered it during the outage, or was in it when
// the outage began and the provisioner had not yet reported it done;
// otherwise the run's state when the outage began.
func (c *segCtx) coveredPhase(run string, down, up time.Time, aimed string) string {
	var at string
	for _, st := range c.events.States(run) {
		if !st.Seen.After(down) {
			at = st.State
		}
		if st.State == aimed && st.Seen.After(down) && st.Seen.Before(up) {
			return aimed
		}
	}
	if at == aimed {
		for _, r := range c.events.Reports(run) {
			if r.Type == "run.torn_down" && !r.Incomplete && r.Seen.Before(down) {
				return at + " (already torn down)"
			}
		}
		return aimed
	}
	return at
}

// Causes a failed run's reason must name, per kube fault: the API server
// unreachable, or the missing verb.
var (
	apiOutageCause = regexp.MustCompile(`(?i)connection refused|unavailable|timed? ?out|deadline exceeded|\bEOF\b|api ?server|connection reset|no route`)
	missingVerb    = regexp.MustCompile(`(?i)cannot ` + kubeRoleVerb + ` resource "` + kubeRoleResource + `"`)
)

// KubeRunFacts is what the cluster and the provisioner's reports showed of
// one kubernetes run.
type KubeRunFacts struct {
	Namespaces []NamespaceLife `json:"namespaces"`
	Reports    []ReportSeen    `json:"reports"`
}

// judgeKube adds the kube segment's checks and numbers to a slot: a run
// that failed under a fault says why (the missing verb; the API server
// unreachable, and is retried, an outage being transient); a clean
// run.torn_down never comes while the namespace is still there; and the
// times to notice and to recover.
func (c *segCtx) judgeKube(ctx context.Context, k Kill, rec *KillRecord, runs []RunFacts) {
	for j := range runs {
		r := &runs[j]
		r.Kube = &KubeRunFacts{Namespaces: c.kube.ns.Of(r.RunID), Reports: c.events.Reports(r.RunID)}
		for _, rep := range r.Kube.Reports {
			if rep.Type != "run.torn_down" || rep.Incomplete {
				continue
			}
			for _, ns := range r.Kube.Namespaces {
				// The watch polls every 200 ms: a second is slack enough.
				if ns.DeletingMs == 0 && ns.GoneMs == 0 || min(nonZero(ns.DeletingMs), nonZero(ns.GoneMs)) > rep.Seen.UnixMilli()+1000 {
					confirmed := ns.DeletionTimestampMs == 0 || ns.DeletionTimestampMs > rep.Seen.UnixMilli()+1000
					r.Extra = append(r.Extra, Violation{RunID: r.RunID, Kind: "torn_down_early", Confirmed: confirmed,
						Detail: fmt.Sprintf("run.torn_down (clean) at %s while namespace %s was not being deleted (deletion seen %s, API deletion timestamp %s)",
							rep.Seen.Format("15:04:05.000"), ns.Name, msTime(ns.DeletingMs), msTime(ns.DeletionTimestampMs))})
				}
			}
			break
		}
	}
	if k.Target == TargetNone || len(runs) == 0 || !rec.Delivered {
		return
	}
	first := &runs[0]
	rec.Reason = first.Reason
	if first.State == "failed" {
		again, err := c.kv.Run(ctx, first.RunID) // the second source of the reason
		reason2 := first.Reason
		if err == nil {
			reason2 = again.Reason
		}
		cause := apiOutageCause
		what := "the API server being unreachable"
		if k.Target == TargetRBAC {
			cause, what = missingVerb, fmt.Sprintf("the missing verb (cannot %s resource %q)", kubeRoleVerb, kubeRoleResource)
		}
		if !cause.MatchString(first.Reason) {
			first.Extra = append(first.Extra, Violation{RunID: first.RunID, Kind: "cause_missing", Confirmed: !cause.MatchString(reason2),
				Detail: fmt.Sprintf("failed under %s in %s, but its reason does not name %s: %q", k.Target, k.Phase, what, truncate(first.Reason, 300))})
		}
		if k.Target == TargetAPIServer && first.RetriedAs == "" {
			first.Extra = append(first.Extra, Violation{RunID: first.RunID, Kind: "not_retried", Confirmed: err == nil && again.RetriedAs == "",
				Detail: fmt.Sprintf("failed under an API server outage (transient) and was not retried: %q", truncate(first.Reason, 300))})
		}
	}
	if k.Target == TargetRBAC && first.State == "done" {
		rec.Error = strings.TrimPrefix(rec.Error+"; the run ended done: its teardown did not meet the missing verb", "; ")
	}

	// Numbers: from the fault's start to the platform's first report of
	// it, and from the fault's end to the run's recovery.
	rec.NoticedS, rec.RecoveredS = -1, -1
	reports := c.events.Reports(first.RunID)
	for _, rep := range reports {
		if !rep.Seen.After(rec.KilledAt) {
			continue
		}
		notice := false
		switch {
		case k.Target == TargetRBAC:
			notice = rep.Type == "run.torn_down" && rep.Incomplete && missingVerb.MatchString(rep.Reason)
		case k.Phase == "provisioning":
			notice = rep.Type == "run.provision_failed"
		default:
			notice = rep.Type == "run.torn_down" && rep.Incomplete
		}
		if notice {
			rec.NoticedS = rep.Seen.Sub(rec.KilledAt).Seconds()
			rec.Noticed = truncate(rep.Reason, 200)
			break
		}
	}
	if rec.ReadyAt.IsZero() {
		return
	}
	switch {
	case k.Phase == "provisioning":
		rec.Recovery = "run provisioned"
		for _, r := range runs {
			for _, rep := range c.events.Reports(r.RunID) {
				if rep.Type == "run.provisioned" && rep.Seen.After(rec.KilledAt) && rec.RecoveredS < 0 {
					rec.RecoveredS = max(0, rep.Seen.Sub(rec.ReadyAt).Seconds())
					if r.RunID != first.RunID {
						rec.Recovery = "retry provisioned"
					}
				}
			}
		}
	default:
		rec.Recovery = "namespace gone"
		for _, ns := range c.kube.ns.Of(first.RunID) {
			if ns.GoneMs > 0 {
				rec.RecoveredS = max(0, float64(ns.GoneMs-rec.ReadyAt.UnixMilli())/1000)
			}
		}
	}
	if rec.RecoveredS < 0 {
		rec.Recovery = "never: " + rec.Recovery
	}
}

// denied is how the API server words a refusal by the authorizer.
var denied = regexp.MustCompile(`cannot [a-z]+ resource "[^"]+"( in API group "[^"]*")?`)

// shownReason shortens a reason for the table but keeps what it names of
// the authorizer's refusal (the verb and resource), which comes late in
// the provisioner's long messages.
func shownReason(reason string) string {
	if len(reason) <= 140 {
		return orDash(reason)
	}
	if m := denied.FindString(reason); m != "" && !strings.Contains(reason[:100], m) {
		return truncate(reason, 100) + " " + m + " …"
	}
	return truncate(reason, 140)
}

func nonZero(v int64) int64 {
	if v == 0 {
		return 1<<62 - 1
	}
	return v
}

// kubeSummary is the kube segment's per-fault table.
func kubeSummary(w io.Writer, s Segment) {
	if !slices.ContainsFunc(s.Kills, func(k KillRecord) bool { return k.Target != TargetNone }) {
		return
	}
	fmt.Fprintln(w, "\nper kube fault (outage: API server down → serving again, or verb taken → given back; noticed: fault start → the provisioner's first report of it;"+
		" recovered: fault end → the run provisioned, or its namespace gone):")
	tw := newTab(w)
	fmt.Fprintln(tw, "slot\tfault\tphase\toutage s\tnoticed s\trecovered s\trecovery\toutcome\tleft behind\treason")
	for _, k := range s.Kills {
		if k.Target == TargetNone {
			continue
		}
		fault := k.Target
		if k.Target == TargetRBAC {
			fault = "role without " + kubeRoleVerb + " " + kubeRoleResource
		} else {
			fault += " stopped"
		}
		down := -1.0
		if k.Delivered && !k.ReadyAt.IsZero() {
			down = k.DownS
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Slot, fault, orDash(k.PhaseObserved), secs(down), secs(k.NoticedS), secs(k.RecoveredS),
			orDash(k.Recovery), k.Outcome, orDash(k.LeftBehind), shownReason(k.Reason))
	}
	_ = tw.Flush()
}

func secs(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func newTab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }
