package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/store"
)

// An error about a DSN names it without its password.
func TestDSNErrorsHideThePassword(t *testing.T) {
	const dsn = "clickhouse://greenflow_writer:s3cret-pw@127.0.0.1:1/greenflow"
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for name, open := range map[string]func(context.Context, string, *zap.Logger) (*store.Store, error){
		"Open": store.Open, "OpenReadOnly": store.OpenReadOnly,
	} {
		_, err := open(ctx, dsn, zap.NewNop())
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), "s3cret-pw", name)
		require.Contains(t, err.Error(), "clickhouse://greenflow_writer@127.0.0.1:1/greenflow", name)
	}
	require.Equal(t, "clickhouse://greenflow_writer@127.0.0.1:1/greenflow", store.RedactDSN(dsn))
}
