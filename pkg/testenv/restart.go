package testenv

import (
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/freeport"
	"github.com/greenflow/greenflow/pkg/natsembed"
)

// RestartableNATS is an embedded JetStream server a test can stop and start
// again on the same port — with its store, or with an empty one — to check
// what clients do across a server restart. It is stopped at cleanup.
type RestartableNATS struct {
	tb       testing.TB
	mu       sync.Mutex
	port     int
	storeDir string
	users    []natsembed.User // authentication on when set
	srv      *server.Server
}

// NewRestartableNATS starts the server on a free port.
func NewRestartableNATS(tb testing.TB) *RestartableNATS {
	tb.Helper()
	ports, err := freeport.Get(1)
	require.NoError(tb, err)
	r := &RestartableNATS{tb: tb, port: ports[0], storeDir: tb.TempDir()}
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// NewRestartableNATSWithAuth is NewRestartableNATS with authentication
// and permissions on: GreenFlow's users, whose credentials the returned
// SecureNATS gives. Nothing is declared: its Declare runs the declarer, as
// a deployment does, which declares the streams and buckets again after a
// restart that lost them (no service may).
func NewRestartableNATSWithAuth(tb testing.TB) (*RestartableNATS, SecureNATS) {
	tb.Helper()
	dir := tb.TempDir()
	users, err := natsembed.EnsureUsers(dir)
	require.NoError(tb, err)
	ports, err := freeport.Get(1)
	require.NoError(tb, err)
	r := &RestartableNATS{tb: tb, port: ports[0], storeDir: tb.TempDir(), users: users}
	r.Start()
	tb.Cleanup(r.Stop)
	return r, SecureNATS{URL: r.URL(), Dir: dir}
}

// URL is the server's client URL; it stays the same across restarts.
func (r *RestartableNATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.port) }

// Stop shuts the server down (clients see the connection drop).
func (r *RestartableNATS) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv.WaitForShutdown()
		r.srv = nil
	}
}

// Start starts the server again with the store it had.
func (r *RestartableNATS) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	srv, err := natsembed.Start(natsembed.Options{Port: r.port, StoreDir: r.storeDir, Users: r.users})
	require.NoError(r.tb, err)
	r.srv = srv
}

// StartEmpty starts the server again on an empty store: every stream,
// consumer and bucket is gone, as after losing the server's disk.
func (r *RestartableNATS) StartEmpty() {
	r.tb.Helper()
	r.mu.Lock()
	r.storeDir = r.tb.TempDir()
	r.mu.Unlock()
	r.Start()
}
