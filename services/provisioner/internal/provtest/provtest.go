// Package provtest holds the test helpers the provisioner's packages
// share (records, processes); only tests import it.
package provtest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Records opens the provisioner's record store on the NATS server at url,
// over a connection of its own (closed when the test ends), as another
// provisioner instance would.
func Records(tb testing.TB, url string) (*state.Store, *bus.Bus) {
	tb.Helper()
	ctx := context.Background()
	b, err := bus.Connect(ctx, url, "test", zap.NewNop(), nil)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	st, err := state.New(state.Default(), state.Deps{Bus: b})
	require.NoError(tb, err)
	require.NoError(tb, st.Open(ctx))
	return st, b
}

// Alive reports a process of this machine that has not exited (a zombie
// has).
func Alive(pid int) bool {
	s, err := procfs.Default.Stat(pid)
	return err == nil && !s.Dead()
}

// Stat reads a live process's /proc stat.
func Stat(tb testing.TB, pid int) procfs.Stat {
	tb.Helper()
	s, err := procfs.Default.Stat(pid)
	require.NoError(tb, err)
	return s
}
