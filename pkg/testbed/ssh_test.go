package testbed_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// silentHost accepts TCP connections and never says a word: what the
// trial met (a gateway behind a firewall that accepts, a node rebooting).
// accepted receives each connection as it is accepted.
func silentHost(t *testing.T) (addr string, accepted <-chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ch := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			ch <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), ch
}

// silentRunner is an SSHRunner whose every address is the silent host.
func silentRunner(t *testing.T, s testbed.Spec, key, addr string, limit time.Duration) *testbed.SSHRunner {
	s.SSH.Key = key
	r, err := testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Logger: testenv.Logger(t), HandshakeTimeout: limit,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// returns runs f and gives its error, failing the test if f is still
// blocked after a minute (the handshake ignoring ctx, as before).
func returns(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("still blocked a minute later: the SSH handshake does not end with its context")
		return nil
	}
}

// Ctrl-C during a handshake that never completes ends it, through the
// gateway and directly; a handshake that never completes ends at its time
// limit with an error saying so.
func TestSSHHandshakeThatNeverAnswers(t *testing.T) {
	key := newSSHWorld(t, k3sYAML, nil).key
	addr, accepted := silentHost(t)
	for _, gateway := range []string{"access.grid5000.fr", ""} {
		s := spec(t)
		s.SSH.Gateway = gateway
		t.Run("cancel, gateway "+gateway, func(t *testing.T) {
			r := silentRunner(t, s, key, addr, time.Hour)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { <-accepted; cancel() }()
			err := returns(t, func() error { _, err := r.Run(ctx, "taurus-1.lyon.grid5000.fr", "true", ""); return err })
			require.ErrorIs(t, err, context.Canceled)
		})
		t.Run("time limit, gateway "+gateway, func(t *testing.T) {
			r := silentRunner(t, s, key, addr, 200*time.Millisecond)
			err := returns(t, func() error {
				_, err := r.Run(context.Background(), "taurus-1.lyon.grid5000.fr", "true", "")
				return err
			})
			require.ErrorContains(t, err, "no SSH handshake within 200ms")
			if gateway != "" {
				require.ErrorContains(t, err, "ssh to gateway access.grid5000.fr as alice")
			}
			<-accepted
		})
	}
}

// A node behind a gateway that answers: the node's handshake runs over a
// channel of the gateway's connection, which takes no deadline; Ctrl-C and
// the time limit end it all the same.
func TestSSHNodeThatNeverAnswersBehindTheGateway(t *testing.T) {
	sshw := newSSHWorld(t, k3sYAML, nil)
	addr, accepted := silentHost(t)
	node := "taurus-1.lyon.grid5000.fr"
	sshw.srv.Forward(net.JoinHostPort(node, strconv.Itoa(sshw.srv.Port)), addr)
	runner := func(limit time.Duration) *testbed.SSHRunner { return sshw.runnerWithin(t, spec(t), limit) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-accepted; cancel() }()
	err := returns(t, func() error { _, err := runner(time.Hour).Run(ctx, node, "true", ""); return err })
	require.ErrorIs(t, err, context.Canceled)

	err = returns(t, func() error {
		_, err := runner(200*time.Millisecond).Run(context.Background(), node, "true", "")
		return err
	})
	require.ErrorContains(t, err, "ssh to "+node+" as alice: no SSH handshake within 200ms")
}

// Ctrl-C while `testbed up` waits for a node that never answers releases
// the job: the stand-in API sees the DELETE. (Ctrl-C while the gateway's
// handshake hangs comes before the job: nothing to release.)
func TestCancelDuringBootstrapReleases(t *testing.T) {
	w := newWorld(t)
	sshw := newSSHWorld(t, k3sYAML, nil)
	addr, accepted := silentHost(t)
	// The control node (the first reached) accepts and never answers.
	sshw.srv.Forward(net.JoinHostPort("taurus-1.lyon.grid5000.fr", strconv.Itoa(sshw.srv.Port)), addr)
	p := &testbed.Platform{Manager: w.manager(t, "host-a", w.clk),
		Runner: func(s testbed.Spec) (testbed.Runner, error) { return sshw.runner(t, s), nil },
		Waiter: waiterFunc(func(context.Context, []byte, map[string]string) error { return nil })}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-accepted; cancel() }()
	err := returns(t, func() error { _, _, err := p.Up(ctx, spec(t), nil); return err })
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "ssh to taurus-1.lyon.grid5000.fr")
	require.Len(t, w.api.Deletes(), 1, "the job is released")
	got, err := w.manager(t, "host-a", w.clk).Get(context.Background(), "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
	require.Contains(t, got.Released, "bring-up failed")
}

// A bring-up still hanging at the release margin (a node that never
// answers, no Ctrl-C) stops there and releases the job: the margin is
// armed from the moment the job runs, not only once the platform is up.
func TestReleaseMarginDuringBootstrap(t *testing.T) {
	w := newWorld(t)
	sshw := newSSHWorld(t, k3sYAML, nil)
	addr, accepted := silentHost(t)
	sshw.srv.Forward(net.JoinHostPort("taurus-1.lyon.grid5000.fr", strconv.Itoa(sshw.srv.Port)), addr)
	m := w.manager(t, "host-a", w.clk)
	p := &testbed.Platform{Manager: m,
		Runner: func(s testbed.Spec) (testbed.Runner, error) { return sshw.runner(t, s), nil },
		Waiter: waiterFunc(func(context.Context, []byte, map[string]string) error { return nil })}
	go func() {
		<-accepted
		// The job's release time comes (fake clock): 2 h walltime less the
		// 15 min margin from the start.
		r, err := m.Get(context.Background(), "energy-a")
		if err == nil {
			w.clk.Step(r.ReleaseBy.Sub(w.clk.Now()))
		}
	}()
	err := returns(t, func() error { _, _, err := p.Up(context.Background(), spec(t), nil); return err })
	require.ErrorIs(t, err, testbed.ErrWalltime)
	require.Len(t, w.api.Deletes(), 1, "the job is released")
	got, err := m.Get(context.Background(), "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
}
