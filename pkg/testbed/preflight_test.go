package testbed_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/sshtest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// protectedKey writes a passphrase-protected key and returns its file and
// the private key.
func protectedKey(t *testing.T) (string, ed25519.PrivateKey) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("correct horse"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "id_protected")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(block), 0o600))
	return path, priv
}

// sshAgent serves an ssh-agent holding keys on a unix socket and points
// SSH_AUTH_SOCK at it.
func sshAgent(t *testing.T, keys ...ed25519.PrivateKey) {
	ring := agent.NewKeyring()
	for _, k := range keys {
		require.NoError(t, ring.Add(agent.AddedKey{PrivateKey: k}))
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = agent.ServeAgent(ring, c); _ = c.Close() }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
}

// A configuration error found before reserving: no job is submitted. The
// trial's case was the reverse (the job ran, then the key was missing).
func TestConfigErrorsCostNoReservation(t *testing.T) {
	protected, _ := protectedKey(t)
	garbage := filepath.Join(t.TempDir(), "not-a-key")
	require.NoError(t, os.WriteFile(garbage, []byte("hello\n"), 0o600))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := closed.Addr().String()
	require.NoError(t, closed.Close())
	silent, _ := silentHost(t)
	nosuch := filepath.Join(t.TempDir(), "id_nosuch")

	for _, tc := range []struct {
		name, key, gateway, want string
	}{
		{"missing key", nosuch, "", "testbed.ssh.key " + nosuch + ": open " + nosuch + ": no such file or directory"},
		{"not a key", garbage, "", "expected an OpenSSH or PEM private key"},
		{"passphrase without agent", protected, "", "is passphrase-protected and GreenFlow asks no passphrase: add it to ssh-agent (ssh-add " + protected + ")"},
		{"gateway refuses", "", refused, "ssh to gateway access.grid5000.fr: dial tcp " + refused},
		{"gateway never answers", "", silent, "ssh to gateway access.grid5000.fr as alice: no SSH handshake within 200ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSH_AUTH_SOCK", "")
			w := newWorld(t)
			sshw := newSSHWorld(t, k3sYAML, nil)
			key := tc.key
			if key == "" {
				key = sshw.key
			}
			p := &testbed.Platform{Manager: w.manager(t, "host-a", w.clk),
				Runner: func(s testbed.Spec) (testbed.Runner, error) {
					s.SSH.Key = key
					return testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Logger: testenv.Logger(t), HandshakeTimeout: 200 * time.Millisecond,
						Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
							var d net.Dialer
							return d.DialContext(ctx, network, tc.gateway)
						}})
				},
				Waiter: waiterFunc(func(context.Context, []byte, map[string]string) error { return nil })}
			_, _, err := p.Up(context.Background(), spec(t), nil)
			require.ErrorContains(t, err, "before reserving energy-a: ")
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, w.api.Requests(), "nothing asked of the testbed")
			_, err = w.manager(t, "host-a", w.clk).Get(context.Background(), "energy-a")
			require.Error(t, err, "nothing recorded")
		})
	}
}

// A passphrase-protected key the user's ssh-agent holds signs through the
// agent: the nodes are reached with it.
func TestPassphraseKeyThroughSSHAgent(t *testing.T) {
	key, priv := protectedKey(t)
	pub, err := ssh.NewPublicKey(priv.Public())
	require.NoError(t, err)

	_, other, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sshAgent(t, other)
	_, _, err = testbed.LoadKey(key)
	require.ErrorContains(t, err, "the agent at SSH_AUTH_SOCK holds 1 key(s), not this one")

	sshAgent(t, other, priv)
	_, what, err := testbed.LoadKey(key)
	require.NoError(t, err)
	require.Equal(t, "ssh-ed25519 "+ssh.FingerprintSHA256(pub)+" (from ssh-agent)", what)

	// The stand-in authorizes the protected key's public half only.
	srv, err := sshtest.New(pub, func(string, string, string) (string, int) { return "", 0 })
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	s := spec(t)
	s.SSH.Key = key
	r, err := testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Port: srv.Port, Logger: testenv.Logger(t),
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, srv.Addr)
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	_, err = r.Run(context.Background(), "taurus-1.lyon.grid5000.fr", "true", "")
	require.NoError(t, err)
	require.Len(t, srv.Commands(), 1)
}

// ssh.user: the Grid'5000 login (a job without deploy gives no root
// login), from ssh.gatewayUser when left out; required inside the testbed.
func TestSSHUserIsTheGrid5000Login(t *testing.T) {
	s := spec(t)
	require.Equal(t, "alice", s.SSH.User, "from ssh.gatewayUser")
	require.Equal(t, "sudo-g5k", s.SSH.Sudo)

	_, err := testbed.ParseSpec([]byte("testbed:\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1, sut: 1, broker: 1, loadgen: 1}\n  walltime: 1h\n"))
	require.ErrorContains(t, err, `testbed.ssh.user: "": expected your Grid'5000 login (nodes of a job without the deploy type take no root login`)

	s, err = testbed.ParseSpec([]byte("testbed:\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1, sut: 1, broker: 1, loadgen: 1}\n  walltime: 1h\n  ssh: {user: root}\n"))
	require.NoError(t, err, "root stays possible, said explicitly")
	require.Empty(t, s.SSH.Sudo)
}
