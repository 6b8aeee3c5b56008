package store

import (
	"context"
	"fmt"
)

// ReplicateSamples copies the samples stored in [fromMs, toMs] shiftMs
// later (earlier when negative), on nodes renamed by appending nodeSuffix.
// It gives benchmarks and load tests a history — many earlier runs on the
// same or other nodes — without generating every row in Go: ClickHouse
// copies them itself.
func (s *Store) ReplicateSamples(ctx context.Context, fromMs, toMs, shiftMs int64, nodeSuffix string) error {
	if err := s.conn.Exec(ctx, `INSERT INTO samples (ts_ms, ts, node, scope, target_id, zone, source, power_w, energy_j, delta_j,
		interval_ms, estimated, collector)
		SELECT ts_ms + ?, toDateTime(intDiv(ts_ms + ?, 1000)), concat(node, ?), scope, target_id, zone, source, power_w, energy_j, delta_j,
		interval_ms, estimated, collector
		FROM samples WHERE ts_ms >= ? AND ts_ms <= ?`, shiftMs, shiftMs, nodeSuffix, fromMs, toMs); err != nil {
		return fmt.Errorf("replicate samples in [%d, %d] by %d ms: %w", fromMs, toMs, shiftMs, err)
	}
	return nil
}
