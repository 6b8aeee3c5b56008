package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/testbed/g5k"
)

// Paths k3s writes on the server.
const (
	K3sTokenPath      = "/var/lib/rancher/k3s/server/token"
	K3sKubeconfigPath = "/etc/rancher/k3s/k3s.yaml"
	k3sInstall        = "curl -sfL https://get.k3s.io"
)

// Step is one command of the bootstrap on one host.
type Step struct {
	Host  string
	Cmd   string
	Stdin string // what the command reads ("<k3s token>" in plans)
	Why   string
}

// BootstrapPlan is the commands Bootstrap runs, in order, for r's nodes:
// RAPL readable on every node, the k3s server on the control node, its
// token read, an agent on every other node with its role label, the
// kubeconfig read. The token goes to agents on standard input (tokenStdin
// is what the plan shows for it).
func BootstrapPlan(s Spec, nodes []Node, tokenStdin string) []Step {
	sudo := s.sudo()
	version := ""
	if s.K3sVersion != "" {
		version = "INSTALL_K3S_VERSION=" + s.K3sVersion + " "
	}
	var control string
	var steps []Step
	for _, n := range nodes {
		steps = append(steps, Step{Host: n.Host, Cmd: sudo + "modprobe intel_rapl_common", Why: "RAPL readable for the energy collector"})
		if n.Role == RoleControl {
			control = n.Host
		}
	}
	steps = append(steps,
		// --tls-san: the API's certificate holds the control node's FQDN,
		// which the kubeconfig's server (or, through a tunnel, its
		// tls-server-name) names.
		// --node-name: the host's short name, whatever its hostname says,
		// which the collectors' sources files are keyed by (SourcesKey)
		// and Bootstrap waits for.
		Step{Host: control, Cmd: fmt.Sprintf("%s | %s%sINSTALL_K3S_EXEC='server --node-name %s --node-label %s=%s --tls-san %s --write-kubeconfig-mode 0600' sh -",
			k3sInstall, sudo, version, g5k.ShortName(control), RoleLabel, s.Pool(RoleControl), control), Why: "k3s server"},
		Step{Host: control, Cmd: sudo + "cat " + K3sTokenPath, Why: "the agents' join token"})
	for _, n := range nodes {
		if n.Role == RoleControl {
			continue
		}
		steps = append(steps, Step{Host: n.Host, Stdin: tokenStdin, Why: "k3s agent, role " + n.Role,
			Cmd: fmt.Sprintf("read -r K3S_TOKEN && export K3S_TOKEN && %s | %sK3S_URL=https://%s:6443 K3S_TOKEN=\"$K3S_TOKEN\" %sINSTALL_K3S_EXEC='agent --node-name %s --node-label %s=%s' sh -",
				k3sInstall, sudo, control, version, g5k.ShortName(n.Host), RoleLabel, s.Pool(n.Role))})
	}
	return append(steps, Step{Host: control, Cmd: sudo + "cat " + K3sKubeconfigPath, Why: "kubeconfig"})
}

// NodeWaiter waits until every named node is Ready with its pool label
// (nodes maps a node name to its RoleLabel value).
type NodeWaiter interface {
	WaitReady(ctx context.Context, kubeconfig []byte, nodes map[string]string) error
}

// Bootstrap turns r's nodes into a k3s cluster over run and returns its
// kubeconfig, its server rewritten to api(control host) (default
// https://<control>:6443), once wait says every node is Ready.
func Bootstrap(ctx context.Context, run Runner, wait NodeWaiter, r Reservation, api func(control string) APIEndpoint) ([]byte, error) {
	if api == nil {
		api = DirectEndpoint
	}
	var token string
	var kubeconfig []byte
	control := r.Hosts(RoleControl)
	if len(control) != 1 {
		return nil, fmt.Errorf("bootstrap k3s on %s: %d control nodes, expected 1", r.Name, len(control))
	}
	for _, st := range BootstrapPlan(r.Spec, r.Nodes, "") {
		stdin := ""
		if strings.HasPrefix(st.Cmd, "read -r K3S_TOKEN") {
			stdin = token + "\n"
		}
		out, err := run.Run(ctx, st.Host, st.Cmd, stdin)
		if err != nil {
			return nil, fmt.Errorf("bootstrap k3s (%s): %w", st.Why, err)
		}
		switch {
		case strings.HasSuffix(st.Cmd, K3sTokenPath):
			if token = strings.TrimSpace(out); token == "" {
				return nil, fmt.Errorf("bootstrap k3s: %s on %s is empty", K3sTokenPath, st.Host)
			}
		case strings.HasSuffix(st.Cmd, K3sKubeconfigPath):
			if kubeconfig, err = RewriteServer([]byte(out), api(control[0])); err != nil {
				return nil, fmt.Errorf("bootstrap k3s: %s on %s: %w", K3sKubeconfigPath, st.Host, err)
			}
		}
	}
	want := map[string]string{}
	for _, n := range r.Nodes {
		want[g5k.ShortName(n.Host)] = r.Spec.Pool(n.Role)
	}
	if err := wait.WaitReady(ctx, kubeconfig, want); err != nil {
		return nil, fmt.Errorf("bootstrap k3s: %w", err)
	}
	return kubeconfig, nil
}

// DirectEndpoint is the control node's API as a machine inside the
// testbed reaches it.
func DirectEndpoint(control string) APIEndpoint {
	return APIEndpoint{Server: fmt.Sprintf("https://%s:%d", control, K3sAPIPort)}
}

// RewriteServer points every cluster of a kubeconfig at ep's server, with
// its TLS server name (k3s writes https://127.0.0.1:6443, which is the
// control node only from itself).
func RewriteServer(kubeconfig []byte, ep APIEndpoint) ([]byte, error) {
	if _, err := url.Parse(ep.Server); err != nil {
		return nil, fmt.Errorf("api server %q: %w", ep.Server, err)
	}
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig: %w", err)
	}
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("read kubeconfig: no cluster in it")
	}
	for _, c := range cfg.Clusters {
		c.Server, c.TLSServerName = ep.Server, ep.TLSServerName
	}
	return clientcmd.Write(*cfg)
}

// KubeNodeWaiter polls the API server with the kubeconfig until every
// node is Ready and carries its role label, saying which are not and why
// when ctx ends.
type KubeNodeWaiter struct {
	Poll  time.Duration // default 2s
	Clock clock.WithTicker
	// Timeout bounds the wait (nodes that never join are a failed
	// bring-up, released); default 10 minutes.
	Timeout time.Duration
}

// WaitReady implements NodeWaiter.
func (w KubeNodeWaiter) WaitReady(ctx context.Context, kubeconfig []byte, nodes map[string]string) error {
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("wait for nodes: kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("wait for nodes: %w", err)
	}
	poll := w.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	clk := w.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	t := clk.NewTicker(poll)
	defer t.Stop()
	const noAnswer = "no answer from the API server yet"
	why := noAnswer
	for {
		missing, err := notReady(ctx, cs, nodes)
		switch {
		case err == nil && len(missing) == 0:
			return nil
		case err == nil:
			why = strings.Join(missing, "; ")
		case why == noAnswer:
			// Until a list succeeds, its error is the reason; after, the
			// nodes' state is (a list cut short by ctx says nothing).
			why = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for nodes ready: %s: %w", why, ctx.Err())
		case <-t.C():
		}
	}
}

func notReady(ctx context.Context, cs kubernetes.Interface, want map[string]string) ([]string, error) {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	have := map[string]corev1.Node{}
	for _, n := range list.Items {
		have[n.Name] = n
	}
	var out []string
	for name, role := range want {
		n, ok := have[name]
		switch {
		case !ok:
			out = append(out, name+" not registered")
		case n.Labels[RoleLabel] != role:
			out = append(out, fmt.Sprintf("%s labelled %s=%q, expected %q", name, RoleLabel, n.Labels[RoleLabel], role))
		case !ready(n):
			out = append(out, name+" not Ready")
		}
	}
	return out, nil
}

func ready(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
