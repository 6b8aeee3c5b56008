// Package kubetest runs a real kube-apiserver and etcd for tests and for the
// chaos suite (controller-runtime's envtest; `make test` builds the binaries
// with scripts/envtest-assets.sh and sets KUBEBUILDER_ASSETS; FindAssets
// finds them the same way). There is no kubelet, scheduler or controller
// manager: Kubelet plays their part by creating each Deployment's pods,
// binding them to nodes and setting their status; without Controllers,
// deleted namespaces stay Terminating (no namespace controller).
//
// The tests that use it are tagged `envtest` (they need the binaries); the
// package itself is not, so that the chaos suite's command can run a
// control plane too.
package kubetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Main starts the API server, runs the package's tests and stops it; call
// it from TestMain. Admin is then the cluster-admin client configuration.
func Main(m *testing.M) {
	stop := MustStart()
	code := m.Run()
	stop()
	os.Exit(code)
}

// MustStart starts the API server and etcd, or exits the test binary with
// the reason; the returned function stops them.
func MustStart() (stop func()) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(scripts/envtest-assets.sh)")
		os.Exit(1)
	}
	start := time.Now()
	cp, err := StartControlPlane(assets, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	current, Admin = cp, cp.Admin
	fmt.Fprintf(os.Stderr, "envtest: kube-apiserver and etcd up in %s\n", time.Since(start).Round(time.Millisecond))
	return func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}

var current *ControlPlane

// StopAPIServer stops the kube-apiserver, as an outage would: clients get
// connection refused. etcd keeps running, and with it the cluster's state.
func StopAPIServer(t testing.TB) {
	t.Helper()
	if err := current.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
}

// StartAPIServer starts the stopped kube-apiserver again, on the same
// address with the same certificates, and waits until it serves.
func StartAPIServer(t testing.TB) {
	t.Helper()
	start := time.Now()
	if err := current.StartAPIServer(context.Background(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver serving again %s after its start", time.Since(start).Round(time.Millisecond))
}

// Kubeconfig writes a kubeconfig for the cluster-admin user to dir and
// returns its path, for code that loads one (the provisioner's --kubeconfig).
func Kubeconfig(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(path, Admin, clientcmdapi.AuthInfo{ClientCertificateData: Admin.CertData, ClientKeyData: Admin.KeyData,
		Token: Admin.BearerToken}); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKubeconfig writes a kubeconfig to path for the cluster rc points at
// (its address and CA), authenticating as auth.
func WriteKubeconfig(path string, rc *rest.Config, auth clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["user"] = &auth
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "user"}
	cfg.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// Admin is the cluster-admin configuration of the running API server.
var Admin *rest.Config

// AdminClient is a cluster-admin client.
func AdminClient(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(Admin)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// As is the admin configuration impersonating a service account of
// namespace greenflow, as the provisioner runs in a cluster.
func As(serviceAccount string) *rest.Config {
	rc := rest.CopyConfig(Admin)
	rc.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:greenflow:" + serviceAccount}
	return rc
}

const hostnameKey = "kubernetes.io/hostname"

// Workers are the nodes EnsureNodes registers by default.
var Workers = []string{"worker-a", "worker-b", "worker-c"}

// EnsureNodes registers ready nodes labelled pool=sut (as their kubelets
// would), and a control-plane node, also pool=sut and first in name order,
// tainted NoSchedule as control planes are: placement must skip it.
func EnsureNodes(t testing.TB, cs kubernetes.Interface, names ...string) {
	t.Helper()
	if err := RegisterNodes(context.Background(), cs, names...); err != nil {
		t.Fatal(err)
	}
}

// RegisterNodes is EnsureNodes for code without a testing.TB.
func RegisterNodes(ctx context.Context, cs kubernetes.Interface, names ...string) error {
	if err := ensureNode(ctx, cs, "a-control-plane", []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}); err != nil {
		return err
	}
	for _, n := range names {
		if err := ensureNode(ctx, cs, n, nil); err != nil {
			return err
		}
	}
	return nil
}

func ensureNode(ctx context.Context, cs kubernetes.Interface, name string, taints []corev1.Taint) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{hostnameKey: name, "pool": "sut"}}}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	created, err = cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("mark node %s ready: %w", name, err)
	}
	// The API server taints new nodes not-ready (TaintNodesByCondition); the
	// node lifecycle controller lifts it once the node reports Ready.
	created.Spec.Taints = taints
	if _, err := cs.CoreV1().Nodes().Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set the taints of node %s: %w", name, err)
	}
	return nil
}

// Kubelet plays the controller manager, scheduler and kubelets for one
// namespace: for each Deployment it creates the pods, binds them to a node
// the pod's node affinity allows (round robin), and sets pod and
// Deployment status. Fail, when set, decides a pod's fate instead.
type Kubelet struct {
	CS    kubernetes.Interface
	NS    string
	Nodes []string
	// Fail returns a waiting reason and message for a pod's containers, or "".
	Fail func(pod string) (reason, message string)
	// Unschedulable leaves pods unbound with the scheduler's message.
	Unschedulable string
	// Restarts is each container's restart count when it becomes ready
	// (restarts during start-up, e.g. waiting for Kafka).
	Restarts int32

	mu      sync.Mutex
	next    int
	refused map[string]bool // pods whose creation was refused, reported once
}

// Logger receives what the stand-ins have to say; a testing.TB is one.
type Logger interface {
	Logf(format string, args ...any)
}

// Run works, in a goroutine of its own, until ctx ends.
func (k *Kubelet) Run(ctx context.Context, log Logger) {
	go func() {
		last := ""
		for ctx.Err() == nil {
			err := k.step(ctx)
			// An error is said once, not every 50 ms of an outage.
			if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && err.Error() != last {
				log.Logf("kubelet %s: %v", k.NS, err)
			}
			last = fmt.Sprint(err)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func (k *Kubelet) step(ctx context.Context) error {
	deps, err := k.CS.AppsV1().Deployments(k.NS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		var ready int32
		for i := int32(0); i < want; i++ {
			name := fmt.Sprintf("%s-%d", d.Name, i)
			pod, err := k.CS.CoreV1().Pods(k.NS).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				pod, err = k.create(ctx, d, name)
				if apierrors.IsForbidden(err) {
					// Refused at admission (Pod Security): the controller
					// reports it as a warning event and tries again later.
					if err := k.reportRefusal(ctx, d, name, err); err != nil {
						return err
					}
					continue
				}
			}
			if err != nil {
				return err
			}
			if podReady(*pod) {
				ready++
			}
		}
		if d.Status.ObservedGeneration != d.Generation || d.Status.ReadyReplicas != ready {
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: want, UpdatedReplicas: want, ReadyReplicas: ready, AvailableReplicas: ready}
			if _, err := k.CS.AppsV1().Deployments(k.NS).UpdateStatus(ctx, &d, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (k *Kubelet) create(ctx context.Context, d appsv1.Deployment, name string) (*corev1.Pod, error) {
	spec := *d.Spec.Template.Spec.DeepCopy()
	allowed := k.Nodes
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		allowed = a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values
	}
	if k.Unschedulable == "" {
		k.mu.Lock()
		spec.NodeName = allowed[k.next%len(allowed)]
		k.next++
		k.mu.Unlock()
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.NS, Labels: d.Spec.Template.Labels}, Spec: spec}
	created, err := k.CS.CoreV1().Pods(k.NS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	now := metav1.Now()
	if k.Unschedulable != "" {
		created.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
			Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: k.Unschedulable, LastTransitionTime: now}}}
		// The scheduler's warning event, as kube-scheduler records it.
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: name + ".", Namespace: k.NS}, Type: corev1.EventTypeWarning,
			Reason: "FailedScheduling", Message: k.Unschedulable, LastTimestamp: now, FirstTimestamp: now, Count: 1,
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: k.NS, Name: name, APIVersion: "v1"},
			Source:         corev1.EventSource{Component: "default-scheduler"}}
		if _, err := k.CS.CoreV1().Events(k.NS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		return k.CS.CoreV1().Pods(k.NS).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	}
	st := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}}
	readyAll := true
	for _, c := range spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ContainerID: "containerd://" + containerID(k.NS+"/"+name+"/"+c.Name), Ready: true,
			RestartCount: k.Restarts,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}
		if k.Fail != nil {
			if reason, msg := k.Fail(name); reason != "" {
				cs = corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
				readyAll = false
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	readyStatus := corev1.ConditionTrue
	if !readyAll {
		readyStatus, st.Phase = corev1.ConditionFalse, corev1.PodPending
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: readyStatus})
	created.Status = st
	return k.CS.CoreV1().Pods(k.NS).UpdateStatus(ctx, created, metav1.UpdateOptions{})
}

// reportRefusal records, once per pod, the FailedCreate warning event the
// ReplicaSet controller records when the API server refuses a pod (on a
// cluster it names the ReplicaSet; the stand-in has none and names the
// Deployment).
func (k *Kubelet) reportRefusal(ctx context.Context, d appsv1.Deployment, pod string, refusal error) error {
	k.mu.Lock()
	done := k.refused[pod]
	k.mu.Unlock()
	if done {
		return nil
	}
	now := metav1.Now()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: d.Name + ".", Namespace: k.NS}, Type: corev1.EventTypeWarning,
		Reason: "FailedCreate", Message: "Error creating: " + refusal.Error(), LastTimestamp: now, FirstTimestamp: now, Count: 1,
		InvolvedObject: corev1.ObjectReference{Kind: "Deployment", Namespace: k.NS, Name: d.Name, APIVersion: "apps/v1"},
		Source:         corev1.EventSource{Component: "replicaset-controller"}}
	if _, err := k.CS.CoreV1().Events(k.NS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("record the refusal of pod %s: %w", pod, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refused == nil {
		k.refused = map[string]bool{}
	}
	k.refused[pod] = true
	return nil
}

func containerID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Crash marks a running pod's first container as restarted twice more
// after an OOM kill.
func Crash(t testing.TB, cs kubernetes.Interface, ns, pod string) {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.ContainerStatuses[0].RestartCount += 2
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// NamespaceDeleted reports a namespace deleted: gone, or Terminating
// (envtest has no namespace controller to finish the job).
func NamespaceDeleted(t testing.TB, cs kubernetes.Interface, ns string) bool {
	t.Helper()
	n, err := cs.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return n.DeletionTimestamp != nil
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
