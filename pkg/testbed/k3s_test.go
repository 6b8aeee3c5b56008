package testbed_test

// The nodes here are sshtest's in-process SSH server, standing in for the
// Grid'5000 access gateway and the reserved nodes behind it (unreachable
// from CI): it records every command each node was asked and plays the
// replies k3s gives on a real node (the token file, the kubeconfig).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/sshtest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

const k3sToken = "K10c0ffee::server:5ecret"

// k3sYAML is what k3s writes: the server at 127.0.0.1, only right on the
// control node itself.
const k3sYAML = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Y2E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    token: abc
`

// sshWorld is the stand-in SSH access and a key it authorizes.
type sshWorld struct {
	srv *sshtest.Server
	key string // private key file
}

func newSSHWorld(t *testing.T, kubeconfig string, fail map[string]string) *sshWorld {
	return newSSHWorldFunc(t, func(host, cmd string) (string, int) {
		for h, c := range fail {
			if h == host && strings.Contains(cmd, c) {
				return "", 1
			}
		}
		switch {
		case strings.HasSuffix(cmd, testbed.K3sTokenPath):
			return k3sToken + "\n", 0
		case strings.HasSuffix(cmd, testbed.K3sKubeconfigPath):
			return kubeconfig, 0
		case cmd == testbed.ResolveCommand("api.grid5000.fr"):
			return g5kAPIInside, 0
		}
		return "", 0
	})
}

// g5kAPIInside is what `getent ahosts api.grid5000.fr` prints on a
// stand-in node: an address inside the testbed (the stand-in's choice; a
// real node prints its site resolver's answer), one line per socket type.
const g5kAPIInside = "172.16.63.5     STREAM api.grid5000.fr\n172.16.63.5     DGRAM  \n172.16.63.5     RAW    \n"

// newSSHWorldFunc starts the stand-in answering each command with reply.
func newSSHWorldFunc(t *testing.T, reply func(host, cmd string) (string, int)) *sshWorld {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	key := filepath.Join(t.TempDir(), "id_ed25519")
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(block), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	srv, err := sshtest.New(sp, func(host, cmd, _ string) (string, int) { return reply(host, cmd) })
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return &sshWorld{srv: srv, key: key}
}

func (w *sshWorld) runner(t *testing.T, s testbed.Spec) *testbed.SSHRunner {
	return w.runnerWithin(t, s, 0)
}

// runnerWithin is runner with a time limit on each handshake (0: the
// default).
func (w *sshWorld) runnerWithin(t *testing.T, s testbed.Spec, limit time.Duration) *testbed.SSHRunner {
	s.SSH.Key = w.key
	r, err := testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Port: w.srv.Port, Logger: testenv.Logger(t), HandshakeTimeout: limit,
		// Every address is the stand-in's gateway: access.grid5000.fr
		// cannot be resolved here.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, w.srv.Addr)
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func reservation(t *testing.T) testbed.Reservation {
	s := spec(t)
	nodes, err := testbed.AssignRoles(s, []string{"taurus-4.lyon.grid5000.fr", "taurus-1.lyon.grid5000.fr", "taurus-5.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr", "taurus-3.lyon.grid5000.fr"})
	require.NoError(t, err)
	return testbed.Reservation{Name: s.Name, Spec: s, Nodes: nodes, ID: "lyon/1900000", Phase: testbed.PhaseRunning}
}

type waiterFunc func(ctx context.Context, kubeconfig []byte, nodes map[string]string) error

func (f waiterFunc) WaitReady(ctx context.Context, kubeconfig []byte, nodes map[string]string) error {
	return f(ctx, kubeconfig, nodes)
}

func TestBootstrapOverSSHThroughGateway(t *testing.T) {
	w := newSSHWorld(t, k3sYAML, nil)
	r := reservation(t)
	var waited map[string]string
	var gotKC []byte
	kc, err := testbed.Bootstrap(context.Background(), w.runner(t, r.Spec), waiterFunc(func(_ context.Context, kc []byte, nodes map[string]string) error {
		waited, gotKC = nodes, kc
		return nil
	}), r, nil)
	require.NoError(t, err)
	require.Equal(t, gotKC, kc)

	// Every node reached through the gateway, as the user's Grid'5000 login
	// there and on the nodes (a job without deploy gives no root login),
	// root through sudo-g5k.
	require.ElementsMatch(t, []string{"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr", "taurus-3.lyon.grid5000.fr", "taurus-4.lyon.grid5000.fr",
		"taurus-5.lyon.grid5000.fr"}, w.srv.Tunnels())
	cmds := w.srv.Commands()
	for _, c := range cmds {
		require.Equal(t, "alice", c.User)
		require.NotContains(t, c.Cmd, k3sToken, "the token never goes on a command line")
	}
	byHost := map[string][]string{}
	for _, c := range cmds {
		byHost[c.Host] = append(byHost[c.Host], c.Cmd)
	}
	require.Equal(t, []string{
		"sudo-g5k modprobe intel_rapl_common",
		"curl -sfL https://get.k3s.io | sudo-g5k INSTALL_K3S_EXEC='server --node-name taurus-1 --node-label greenflow.dev/pool=platform --tls-san taurus-1.lyon.grid5000.fr --write-kubeconfig-mode 0600' sh -",
		"sudo-g5k cat /var/lib/rancher/k3s/server/token",
		"sudo-g5k cat /etc/rancher/k3s/k3s.yaml",
	}, byHost["taurus-1.lyon.grid5000.fr"])
	require.Equal(t, []string{
		"sudo-g5k modprobe intel_rapl_common",
		`read -r K3S_TOKEN && export K3S_TOKEN && curl -sfL https://get.k3s.io | sudo-g5k K3S_URL=https://taurus-1.lyon.grid5000.fr:6443 K3S_TOKEN="$K3S_TOKEN" INSTALL_K3S_EXEC='agent --node-name taurus-4 --node-label greenflow.dev/pool=broker' sh -`,
	}, byHost["taurus-4.lyon.grid5000.fr"])
	for _, c := range cmds {
		if strings.HasPrefix(c.Cmd, "read -r K3S_TOKEN") {
			require.Equal(t, k3sToken, c.Stdin, "agents get the server's token on stdin")
		}
	}
	// The server comes before any agent.
	require.Contains(t, cmds[5].Cmd, "server --node-name")

	cfg, err := clientcmd.Load(kc)
	require.NoError(t, err)
	require.Equal(t, "https://taurus-1.lyon.grid5000.fr:6443", cfg.Clusters["default"].Server)
	// No platform node: the control node runs the platform (pool platform).
	require.Equal(t, map[string]string{"taurus-1": "platform", "taurus-2": "sut", "taurus-3": "sut", "taurus-4": "broker", "taurus-5": "loadgen"}, waited)
}

func TestBootstrapSaysWhichStepFailedWhere(t *testing.T) {
	w := newSSHWorld(t, k3sYAML, map[string]string{"taurus-3.lyon.grid5000.fr": "agent"})
	r := reservation(t)
	_, err := testbed.Bootstrap(context.Background(), w.runner(t, r.Spec), waiterFunc(func(context.Context, []byte, map[string]string) error { return nil }), r, nil)
	require.ErrorContains(t, err, "bootstrap k3s (k3s agent, role sut): on taurus-3.lyon.grid5000.fr:")
	require.ErrorContains(t, err, "exited 1")
}

func TestSSHRefusedKey(t *testing.T) {
	w := newSSHWorld(t, k3sYAML, nil)
	other := newSSHWorld(t, k3sYAML, nil)
	r := reservation(t)
	r.Spec.SSH.Key = other.key
	run, err := testbed.NewSSHRunner(r.Spec.SSH, testbed.SSHDeps{Port: w.srv.Port, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, w.srv.Addr)
	}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = run.Run(ctx, "taurus-1.lyon.grid5000.fr", "true", "")
	require.ErrorContains(t, err, "ssh to gateway access.grid5000.fr as alice")
	require.ErrorContains(t, err, "unable to authenticate")
}
