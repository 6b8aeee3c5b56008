package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// K3sAPIPort is the port of the k3s API server on the control node.
const K3sAPIPort = 6443

// APIEndpoint is how this machine reaches the cluster's API: the
// kubeconfig's server and, when that is not a name the API server's
// certificate holds (a tunnel's 127.0.0.1), the name to verify it
// against (tls-server-name).
type APIEndpoint struct {
	Server        string
	TLSServerName string
}

// Tunnel is a local forward to an address behind the testbed's access
// gateway (`ssh -L port:target access.grid5000.fr`), through Go's SSH
// client: each connection accepted on the local address is a direct-tcpip
// channel of the gateway's connection. From outside Grid'5000 the control
// node's API (6443) is reachable only so. It lives as long as the process
// that opened it (Close, or the end of `greenflow testbed up`).
type Tunnel struct {
	ln     net.Listener
	target string
	dial   func(ctx context.Context, addr string) (net.Conn, error)
	log    *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// OpenTunnel listens on listen (e.g. 127.0.0.1:0, any free port) and
// forwards what it accepts to target through the gateway r reaches. It
// opens the gateway connection first, so a gateway that refuses fails
// here, not at the first request.
func OpenTunnel(ctx context.Context, r *SSHRunner, listen, target string, log *zap.Logger) (*Tunnel, error) {
	if log == nil {
		log = zap.NewNop()
	}
	c, err := r.DialThroughGateway(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("open a tunnel to %s: %w", target, err)
	}
	_ = c.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("open a tunnel to %s: listen on %s: %w", target, listen, err)
	}
	t := &Tunnel{ln: ln, target: target, dial: r.DialThroughGateway, log: log.With(zap.String("component", "testbed-tunnel")),
		conns: map[net.Conn]struct{}{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.accept()
	t.log.Info("tunnel open", zap.String("local", ln.Addr().String()), zap.String("target", target))
	return t, nil
}

// Addr is the local address (127.0.0.1:port).
func (t *Tunnel) Addr() string { return t.ln.Addr().String() }

// Endpoint is the kubeconfig's server through the tunnel, verified
// against host, the name the target's certificate holds.
func (t *Tunnel) Endpoint(host string) APIEndpoint {
	return APIEndpoint{Server: "https://" + t.Addr(), TLSServerName: host}
}

// Close stops listening, closes the connections forwarded and waits for
// them.
func (t *Tunnel) Close() error {
	t.cancel()
	err := t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}

func (t *Tunnel) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		t.wg.Add(1)
		go t.forward(c)
	}
}

func (t *Tunnel) track(c net.Conn, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

// forward copies between a local connection and its channel through the
// gateway until either side ends.
func (t *Tunnel) forward(local net.Conn) {
	defer t.wg.Done()
	t.track(local, true)
	defer t.track(local, false)
	defer local.Close()
	ctx, cancel := context.WithTimeout(t.ctx, 30*time.Second)
	remote, err := t.dial(ctx, t.target)
	cancel()
	if err != nil {
		t.log.Warn("tunnel connection refused", zap.String("target", t.target), zap.Error(err))
		return
	}
	t.track(remote, true)
	defer t.track(remote, false)
	defer remote.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(remote, local); done <- struct{}{} }()
	go func() { _, _ = io.Copy(local, remote); done <- struct{}{} }()
	<-done
}

// TunnelUp says whether a tunnel listens at addr (for `testbed status`,
// another process than the one holding it): a connection accepted within
// timeout.
func TunnelUp(addr string, timeout time.Duration) error {
	if addr == "" {
		return errors.New("no tunnel recorded")
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// GatewayTunnel is Platform.Connect from outside the testbed: a Tunnel
// to the control node's API (control:6443) through the access gateway,
// recorded with the reservation for `testbed status`, and a kubeconfig
// endpoint of https://127.0.0.1:<port> verified against the control
// node's FQDN (k3s's certificate holds it: --tls-san). Close closes it.
type GatewayTunnel struct {
	Manager *Manager
	// Runner makes the SSH connection to the gateway (NewSSHRunner).
	Runner func(Spec) (*SSHRunner, error)
	Listen string // default 127.0.0.1:0 (any free port)
	Logger *zap.Logger

	mu     sync.Mutex
	name   string
	runner *SSHRunner
	tunnel *Tunnel
}

// Connect implements Platform.Connect.
func (g *GatewayTunnel) Connect(ctx context.Context, r Reservation) (APIEndpoint, error) {
	control := r.Hosts(RoleControl)
	if len(control) != 1 {
		return APIEndpoint{}, fmt.Errorf("tunnel to %s: %d control nodes, expected 1", r.Name, len(control))
	}
	if r.Spec.SSH.Gateway == "" {
		return APIEndpoint{}, fmt.Errorf("tunnel to %s: ssh.gateway is not set (inside the testbed the API is reached directly)", r.Name)
	}
	run, err := g.Runner(r.Spec)
	if err != nil {
		return APIEndpoint{}, err
	}
	listen := g.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	t, err := OpenTunnel(ctx, run, listen, net.JoinHostPort(control[0], fmt.Sprint(K3sAPIPort)), g.Logger)
	if err != nil {
		_ = run.Close()
		return APIEndpoint{}, err
	}
	if err := g.Manager.SetTunnel(ctx, r.Name, t.Addr()); err != nil {
		_ = t.Close()
		_ = run.Close()
		return APIEndpoint{}, err
	}
	g.mu.Lock()
	g.name, g.runner, g.tunnel = r.Name, run, t
	g.mu.Unlock()
	return t.Endpoint(control[0]), nil
}

// Addr is the tunnel's local address ("" before Connect).
func (g *GatewayTunnel) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tunnel == nil {
		return ""
	}
	return g.tunnel.Addr()
}

// Close closes the tunnel and its gateway connection and clears the
// record's tunnel (bounded: it runs as the command ends).
func (g *GatewayTunnel) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tunnel == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := errors.Join(g.tunnel.Close(), g.runner.Close())
	if r, gerr := g.Manager.Get(ctx, g.name); gerr == nil && r.Tunnel != "" {
		err = errors.Join(err, g.Manager.SetTunnel(ctx, g.name, ""))
	}
	g.tunnel, g.runner = nil, nil
	return err
}
