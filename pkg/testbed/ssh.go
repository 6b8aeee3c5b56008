package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Runner runs a shell command on a host and returns its standard output.
// stdin, when not empty, is the command's standard input: secrets (the k3s
// token) travel there, never in a command line that logs and process
// lists show.
type Runner interface {
	Run(ctx context.Context, host, cmd, stdin string) (string, error)
}

// SSHRunner runs commands over SSH (golang.org/x/crypto/ssh) with the
// user's key, through the testbed's access gateway when one is set (a jump
// host: the node's connection is a direct-tcpip channel of the gateway's).
// It keeps one connection per host. Close closes them all.
type SSHRunner struct {
	ssh    SSH
	port   int
	auth   ssh.AuthMethod
	hostCB ssh.HostKeyCallback
	log    *zap.Logger
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	limit  time.Duration

	mu    sync.Mutex
	gw    *ssh.Client
	hosts map[string]*ssh.Client
}

// SSHDeps are an SSHRunner's replaceable parts (tests: the port of the
// stand-in's gateway, a dialer).
type SSHDeps struct {
	Port   int // of every host and the gateway; 0: 22
	Logger *zap.Logger
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	// HandshakeTimeout bounds each connection's dial and SSH handshake
	// (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
}

// DefaultHandshakeTimeout bounds a dial and SSH handshake: a host that
// accepts and never speaks (a firewall, a node rebooting) would otherwise
// hold `testbed up` — and the reservation — until the walltime.
const DefaultHandshakeTimeout = 30 * time.Second

// NewSSHRunner reads the private key (and known_hosts, when set); it
// opens no connection.
func NewSSHRunner(cfg SSH, d SSHDeps) (*SSHRunner, error) {
	auth, _, err := LoadKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	r := &SSHRunner{ssh: cfg, port: d.Port, auth: auth, log: d.Logger, dial: d.Dial, limit: d.HandshakeTimeout, hosts: map[string]*ssh.Client{}}
	if r.limit <= 0 {
		r.limit = DefaultHandshakeTimeout
	}
	if r.port == 0 {
		r.port = 22
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.dial == nil {
		var nd net.Dialer
		r.dial = nd.DialContext
	}
	if cfg.KnownHosts != "" {
		if r.hostCB, err = knownhosts.New(expandHome(cfg.KnownHosts)); err != nil {
			return nil, fmt.Errorf("ssh known hosts %s: %w", cfg.KnownHosts, err)
		}
	} else {
		// Nodes are reinstalled between reservations and change keys; without
		// a known_hosts file each key is accepted and logged (README).
		r.hostCB = func(host string, _ net.Addr, key ssh.PublicKey) error {
			r.log.Info("ssh host key accepted without known_hosts", zap.String("host", host), zap.String("fingerprint", ssh.FingerprintSHA256(key)))
			return nil
		}
	}
	return r, nil
}

// LoadKey reads and parses the private key file key (testbed.ssh.key)
// and returns how to authenticate with it and what it is (type and
// fingerprint). A passphrase-protected key is used through ssh-agent
// (SSH_AUTH_SOCK) when the agent holds it; GreenFlow asks no passphrase.
// up calls it before reserving and plan checks it, so a key that cannot
// be used costs no reservation.
func LoadKey(key string) (ssh.AuthMethod, string, error) {
	path := expandHome(key)
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("testbed.ssh.key %s: %w (the private key whose public half is in your Grid'5000 account)", key, err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var pp *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pp):
		return agentKey(key, pp.PublicKey)
	case err != nil:
		return nil, "", fmt.Errorf("testbed.ssh.key %s: %w: expected an OpenSSH or PEM private key", key, err)
	}
	pub := signer.PublicKey()
	return ssh.PublicKeys(signer), pub.Type() + " " + ssh.FingerprintSHA256(pub), nil
}

// agentKey authenticates with the passphrase-protected key key (public
// half pub, nil when the file does not say) through ssh-agent.
func agentKey(key string, pub ssh.PublicKey) (ssh.AuthMethod, string, error) {
	fix := fmt.Sprintf("testbed.ssh.key %s is passphrase-protected and GreenFlow asks no passphrase: add it to ssh-agent (ssh-add %s) "+
		"and run greenflow with SSH_AUTH_SOCK set, or name an unencrypted key", key, key)
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, "", fmt.Errorf("%s (SSH_AUTH_SOCK is not set)", fix)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, "", fmt.Errorf("%s (ssh-agent at SSH_AUTH_SOCK %s: %w)", fix, sock, err)
	}
	ag := agent.NewClient(conn)
	signers, err := ag.Signers()
	if err != nil {
		_ = conn.Close()
		return nil, "", fmt.Errorf("%s (ssh-agent: %w)", fix, err)
	}
	for _, sg := range signers {
		if pub == nil || bytes.Equal(sg.PublicKey().Marshal(), pub.Marshal()) {
			// The agent's connection lives as long as the process: every
			// handshake signs through it.
			return ssh.PublicKeys(sg), sg.PublicKey().Type() + " " + ssh.FingerprintSHA256(sg.PublicKey()) + " (from ssh-agent)", nil
		}
	}
	_ = conn.Close()
	return nil, "", fmt.Errorf("%s (the agent at SSH_AUTH_SOCK holds %d key(s), not this one)", fix, len(signers))
}

// Preflight checks, before anything is reserved, what can be checked of
// the way to the nodes: with a gateway (outside the testbed), the dial and
// SSH handshake to it with the key — the connection is kept for the
// nodes. Inside the testbed the nodes are not known yet: only the key was
// checked (NewSSHRunner).
func (r *SSHRunner) Preflight(ctx context.Context) error {
	if r.ssh.Gateway == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.gatewayLocked(ctx)
	return err
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

func (r *SSHRunner) addr(host string) string { return net.JoinHostPort(host, fmt.Sprint(r.port)) }

// client returns the connection to host, opening it (through the gateway
// when set).
func (r *SSHRunner) client(ctx context.Context, host string) (*ssh.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.hosts[host]; ok {
		return c, nil
	}
	cfg := &ssh.ClientConfig{User: r.ssh.User, Auth: []ssh.AuthMethod{r.auth}, HostKeyCallback: r.hostCB}
	hctx, cancel := context.WithTimeout(ctx, r.limit)
	defer cancel()
	var conn net.Conn
	var err error
	if r.ssh.Gateway != "" {
		var gw *ssh.Client
		if gw, err = r.gatewayLocked(ctx); err != nil {
			return nil, err
		}
		conn, err = gw.DialContext(hctx, "tcp", r.addr(host))
	} else {
		conn, err = r.dial(hctx, "tcp", r.addr(host))
	}
	if err != nil {
		return nil, fmt.Errorf("ssh to %s: %w", host, r.why(ctx, hctx, err))
	}
	cl, err := r.handshake(ctx, hctx, conn, r.addr(host), cfg)
	if err != nil {
		return nil, fmt.Errorf("ssh to %s as %s: %w", host, r.ssh.User, err)
	}
	r.hosts[host] = cl
	return cl, nil
}

// handshake runs the SSH handshake on conn, closing it when hctx ends
// first (ctx done: Ctrl-C; or the handshake's time is up) — the only way
// to stop x/crypto/ssh's handshake, which takes no context and, over a
// gateway's channel, no deadline either.
func (r *SSHRunner) handshake(ctx, hctx context.Context, conn net.Conn, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	stop := context.AfterFunc(hctx, func() { _ = conn.Close() })
	c, ch, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() {
		if err == nil {
			_ = c.Close()
		}
		return nil, r.why(ctx, hctx, err)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return ssh.NewClient(c, ch, reqs), nil
}

// why says why a dial or handshake under hctx (derived from ctx) failed:
// ctx's end, the time limit, or err.
func (r *SSHRunner) why(ctx, hctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case hctx.Err() != nil:
		return fmt.Errorf("no SSH handshake within %s (the host accepts connections but does not answer as an SSH server)", r.limit)
	}
	return err
}

// gatewayLocked returns the connection to the access gateway, opening it
// when there is none yet; r.mu is held.
func (r *SSHRunner) gatewayLocked(ctx context.Context) (*ssh.Client, error) {
	if r.gw != nil {
		return r.gw, nil
	}
	hctx, cancel := context.WithTimeout(ctx, r.limit)
	defer cancel()
	gc, err := r.dial(hctx, "tcp", r.addr(r.ssh.Gateway))
	if err != nil {
		return nil, fmt.Errorf("ssh to gateway %s: %w", r.ssh.Gateway, r.why(ctx, hctx, err))
	}
	cl, err := r.handshake(ctx, hctx, gc, r.addr(r.ssh.Gateway), &ssh.ClientConfig{User: r.ssh.GatewayUser, Auth: []ssh.AuthMethod{r.auth}, HostKeyCallback: r.hostCB})
	if err != nil {
		return nil, fmt.Errorf("ssh to gateway %s as %s: %w", r.ssh.Gateway, r.ssh.GatewayUser, err)
	}
	r.gw = cl
	return r.gw, nil
}

// DialThroughGateway opens a TCP connection to addr (host:port) as the
// access gateway sees it: a direct-tcpip channel of the gateway's
// connection (what `ssh -L` does). A gateway connection found broken is
// opened again, once.
func (r *SSHRunner) DialThroughGateway(ctx context.Context, addr string) (net.Conn, error) {
	if r.ssh.Gateway == "" {
		return nil, errors.New("dial through the gateway: no gateway set (ssh.gateway)")
	}
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		gw, err := r.gatewayLocked(ctx)
		r.mu.Unlock()
		if err != nil {
			return nil, err
		}
		conn, err := gw.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn, nil
		}
		if attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s through gateway %s: %w", addr, r.ssh.Gateway, err)
		}
		// The gateway's connection may have died (a laptop asleep, the
		// gateway restarted): drop it and open a new one.
		r.mu.Lock()
		if r.gw == gw {
			_ = gw.Close()
			r.gw = nil
		}
		r.mu.Unlock()
	}
}

// CommandError is a command that ran and failed.
type CommandError struct {
	Host, Cmd string
	Status    int
	Stderr    string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("on %s: %q exited %d: %s", e.Host, e.Cmd, e.Status, strings.TrimSpace(e.Stderr))
}

// Run implements Runner. A done ctx closes the session (the command may
// go on running on the host).
func (r *SSHRunner) Run(ctx context.Context, host, cmd, stdin string) (string, error) {
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	return r.RunStream(ctx, host, cmd, in)
}

// RunStream implements StreamRunner: Run with stdin streamed (an image
// tarball), nil for none.
func (r *SSHRunner) RunStream(ctx context.Context, host, cmd string, stdin io.Reader) (string, error) {
	c, err := r.client(ctx, host)
	if err != nil {
		return "", err
	}
	// Opening a session waits for the host's answer, with no context:
	// ctx's end closes the connection (dropped, opened again next time).
	stop := context.AfterFunc(ctx, func() { r.drop(host, c) })
	s, err := c.NewSession()
	if !stop() {
		return "", fmt.Errorf("ssh session on %s: %w", host, ctx.Err())
	}
	if err != nil {
		return "", fmt.Errorf("ssh session on %s: %w", host, err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if stdin != nil {
		s.Stdin = stdin
	}
	r.log.Info("ssh run", zap.String("host", host), zap.String("cmd", cmd))
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case <-ctx.Done():
		_ = s.Close()
		return "", fmt.Errorf("on %s: %q: %w", host, cmd, ctx.Err())
	case err = <-done:
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return out.String(), &CommandError{Host: host, Cmd: cmd, Status: ee.ExitStatus(), Stderr: errb.String()}
	}
	if err != nil {
		return out.String(), fmt.Errorf("on %s: %q: %w", host, cmd, err)
	}
	return out.String(), nil
}

// drop closes host's connection c and forgets it.
func (r *SSHRunner) drop(host string, c *ssh.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hosts[host] == c {
		delete(r.hosts, host)
	}
	_ = c.Close()
}

// Close closes every connection.
func (r *SSHRunner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for h, c := range r.hosts {
		errs = append(errs, c.Close())
		delete(r.hosts, h)
	}
	if r.gw != nil {
		errs = append(errs, r.gw.Close())
		r.gw = nil
	}
	return errors.Join(errs...)
}
