package scheduler_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func nopLogger() *zap.Logger { return zap.NewNop() }

func natsFor(tb testing.TB) string { return testenv.NATS(tb) }

func storeFor(tb testing.TB) *store.Store { return testenv.Store(tb) }

func startSchedulerTB(tb testing.TB, ctx context.Context, h *harness) {
	cfg := scheduler.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	cfg.Tick = 5 * time.Millisecond
	b, err := bus.Connect(ctx, h.url, "scheduler", zap.NewNop(), nil)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	s, err := scheduler.New(cfg, b, h.store, zap.NewNop(), prometheus.NewRegistry(), nil)
	require.NoError(tb, err)
	h.sched = s
	go func() { _ = s.Run(ctx) }()
}
