// Package sshtest is an in-process stand-in for a testbed's SSH access:
// one server playing the access gateway (access.grid5000.fr) and, behind
// it, every node. The real nodes cannot be reached from CI, and what the
// bootstrap must get right is what it asks each node and how it uses the
// answers; so the stand-in records every command per node and plays the
// replies a test scripts (Reply). It uses golang.org/x/crypto/ssh's server
// side, with public-key auth against the one key the test authorizes: a
// node is reached through the gateway with a direct-tcpip channel (what
// `ssh -J` does), whose target names the node.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Command is one command a node (or the gateway) ran.
type Command struct {
	Host, User, Cmd, Stdin string
}

// Reply is how a node answers a command: stdout and exit status.
type Reply func(host, cmd, stdin string) (stdout string, status int)

// Server is the stand-in.
type Server struct {
	Addr string // 127.0.0.1:port, the gateway
	Port int

	ln     net.Listener
	cfg    *ssh.ServerConfig
	reply  Reply
	mu     sync.Mutex
	cmds   []Command
	tunnel []string // direct-tcpip targets, in order
	fwd    map[string]string
	fwdLog []string
	wg     sync.WaitGroup
}

// New starts a stand-in accepting the public key authorized, answering
// commands with reply.
func New(authorized ssh.PublicKey, reply Reply) (*Server, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(authorized.Marshal()) {
			return &ssh.Permissions{}, nil
		}
		return nil, fmt.Errorf("key %s not authorized", ssh.FingerprintSHA256(k))
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, cfg: cfg, reply: reply}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { _ = s.ln.Close(); s.wg.Wait() }

// Commands returns every command run so far, in order.
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cmds)
}

// Forward makes the gateway forward direct-tcpip channels to target
// (host:port, e.g. the control node's API at taurus-1…:6443) to the real
// address to, as the access gateway does for a local forward (ssh -L).
// Targets not forwarded are nodes' SSH servers.
func (s *Server) Forward(target, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fwd == nil {
		s.fwd = map[string]string{}
	}
	s.fwd[target] = to
}

// Forwarded returns the forwarded targets of the channels opened, in
// order.
func (s *Server) Forwarded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fwdLog)
}

// Tunnels returns the hosts reached through the gateway.
func (s *Server) Tunnels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tunnel)
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c, "gateway")
	}
}

// serve runs one SSH connection to host: sessions run commands there;
// direct-tcpip channels (only on the gateway) open a connection to a node.
func (s *Server) serve(c net.Conn, host string) {
	sc, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		_ = c.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go s.session(ch, creqs, host, sc.User())
		case "direct-tcpip":
			if host != "gateway" {
				_ = nc.Reject(ssh.Prohibited, "no forwarding from nodes")
				continue
			}
			target, port, ok := parseDirect(nc.ExtraData())
			if !ok {
				_ = nc.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
				continue
			}
			hostPort := net.JoinHostPort(target, fmt.Sprint(port))
			s.mu.Lock()
			to, forwarded := s.fwd[hostPort]
			s.mu.Unlock()
			if forwarded {
				s.forward(nc, hostPort, to)
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(creqs)
			s.mu.Lock()
			s.tunnel = append(s.tunnel, target)
			s.mu.Unlock()
			go s.serve(&chanConn{Channel: ch}, target)
		default:
			_ = nc.Reject(ssh.UnknownChannelType, nc.ChannelType())
		}
	}
}

func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request, host, user string) {
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" {
			_ = r.Reply(false, nil)
			continue
		}
		var p struct{ Cmd string }
		if err := ssh.Unmarshal(r.Payload, &p); err != nil {
			_ = r.Reply(false, nil)
			return
		}
		_ = r.Reply(true, nil)
		stdin := ""
		switch {
		case strings.HasPrefix(p.Cmd, "read "): // reads a line of input
			stdin = readLine(ch)
		case strings.HasSuffix(p.Cmd, " -"): // reads its input to the end (an image import, a manifest)
			b, _ := io.ReadAll(ch)
			stdin = string(b)
		}
		s.mu.Lock()
		s.cmds = append(s.cmds, Command{Host: host, User: user, Cmd: p.Cmd, Stdin: stdin})
		s.mu.Unlock()
		out, status := s.reply(host, p.Cmd, stdin)
		_, _ = io.WriteString(ch, out)
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		return
	}
}

func readLine(r io.Reader) string {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return b.String()
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String()
		}
	}
}

// forward connects a direct-tcpip channel to the address to.
func (s *Server) forward(nc ssh.NewChannel, target, to string) {
	c, err := net.Dial("tcp", to)
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, creqs, err := nc.Accept()
	if err != nil {
		_ = c.Close()
		return
	}
	go ssh.DiscardRequests(creqs)
	s.mu.Lock()
	s.fwdLog = append(s.fwdLog, target)
	s.mu.Unlock()
	go func() {
		defer ch.Close()
		defer c.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(c, ch); done <- struct{}{} }()
		go func() { _, _ = io.Copy(ch, c); done <- struct{}{} }()
		<-done
	}()
}

// parseDirect reads RFC 4254's direct-tcpip payload: host, port, origin.
func parseDirect(b []byte) (string, uint32, bool) {
	if len(b) < 4 {
		return "", 0, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint32(len(b)-4) < n+4 {
		return "", 0, false
	}
	return string(b[4 : 4+n]), binary.BigEndian.Uint32(b[4+n:]), true
}

// chanConn makes an SSH channel a net.Conn, for a server connection
// inside it.
type chanConn struct{ ssh.Channel }

func (c *chanConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *chanConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *chanConn) SetDeadline(time.Time) error      { return nil }
func (c *chanConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chanConn) SetWriteDeadline(time.Time) error { return nil }
