package testenv

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/natsembed"
)

// SecureNATS is an embedded NATS server that accepts only GreenFlow's
// users, each with the permissions the event contract gives it.
type SecureNATS struct {
	URL string
	Dir string // the users' seed files
}

// NATSWithAuth starts an embedded JetStream server with authentication
// and permissions on, for this test.
func NATSWithAuth(tb testing.TB) SecureNATS {
	tb.Helper()
	dir := tb.TempDir()
	users, err := natsembed.EnsureUsers(dir)
	require.NoError(tb, err)
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: tb.TempDir(), Users: users})
	require.NoError(tb, err)
	tb.Cleanup(ns.Shutdown)
	s := SecureNATS{URL: ns.ClientURL(), Dir: dir}
	s.Declare(tb)
	return s
}

// Declare runs the declarer on the server at s.URL until the test ends, as
// `greenflow nats declare --keep` does: admin declares every stream and
// bucket (the services may only look them up), again after a restart that
// lost them, and follows the scheduler's armed triggers.
func (s SecureNATS) Declare(tb testing.TB) {
	tb.Helper()
	admin := s.Bus(tb, bus.UserAdmin)
	require.NoError(tb, bus.DeclareTopology(context.Background(), admin))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.FollowTriggers(ctx, admin) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("the declarer's trigger follower: %v", err)
		}
	})
}

// Creds are user's credentials.
func (s SecureNATS) Creds(user string) bus.Credentials {
	return bus.Credentials{NKeyFile: natsembed.SeedFile(s.Dir, user)}
}

// Conn connects as user (plus opts), closed at cleanup.
func (s SecureNATS) Conn(tb testing.TB, user string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	co, err := s.Creds(user).Options()
	require.NoError(tb, err)
	nc, err := nats.Connect(s.URL, append(co, opts...)...)
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	return nc
}

// Bus connects a bus as user, closed at cleanup.
func (s SecureNATS) Bus(tb testing.TB, user string) *bus.Bus {
	tb.Helper()
	co, err := s.Creds(user).Options()
	require.NoError(tb, err)
	b, err := bus.Connect(context.Background(), s.URL, user, Logger(tb), nil, co...)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	return b
}
