// Package chservertest runs a clickhouse-server of a test's own, for tests
// of what lives in the server's files (its users, their passwords) that the
// shared server of pkg/testenv cannot show.
package chservertest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/chserver"
)

// Start starts a server with its state in dir (chserver.Start, within two
// minutes) and stops it when the test ends; a test may stop it before.
func Start(tb testing.TB, dir string) *chserver.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := chserver.Start(ctx, dir)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = srv.Stop() })
	return srv
}
