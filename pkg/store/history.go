package store

import (
	"context"
	"fmt"
)

// Synthetic history, for benchmarks and load tests.

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

// HistoryEndMs is where the benchmarks' shared history ends (2025-10-09
// 06:06:40 UTC): every benchmark that builds it (GenerateSampleHistory with
// the same size) finds the one an earlier benchmark built, and the runs they
// measure come after it.
const HistoryEndMs = int64(1_759_990_000_000)

// HistorySeries is how many series GenerateSampleHistory spreads a day's
// rows over: 80 nodes (n0…n3, the nodes benchmarks measure their run on,
// and h4…h79, another testbed's) of 100 process targets each.
const HistorySeries = 8000

// GenerateSampleHistory makes sure the days before endMs hold a synthetic
// history of rowsPerDay samples each, days days back: a shared database
// after a year of experiments, for benchmarks. ClickHouse generates the
// rows itself (INSERT … SELECT from numbers()), a day at a time; a day that
// already holds at least rowsPerDay samples (an earlier benchmark's) is
// kept, so the data set is built once per machine and reused. The rows are
// deterministic and their keys distinct. progress, when set, is called
// after each day with the days done. It returns the rows the history holds.
func (s *Store) GenerateSampleHistory(ctx context.Context, endMs int64, days int, rowsPerDay uint64, progress func(done int)) (uint64, error) {
	const dayMs = 24 * 3600 * 1000
	ticks := (rowsPerDay + HistorySeries - 1) / HistorySeries
	step := int64(dayMs / max(ticks, 1))
	var total uint64
	for d := 1; d <= days; d++ {
		start := endMs - int64(d)*dayMs
		var have uint64
		if err := s.conn.QueryRow(ctx, `SELECT count() FROM samples WHERE ts >= toDateTime(intDiv(?, 1000)) AND ts < toDateTime(intDiv(?, 1000))
			AND collector = 'history'`, start, start+dayMs).Scan(&have); err != nil {
			return total, fmt.Errorf("count the history of day %d: %w", d, err)
		}
		if have < rowsPerDay {
			if err := s.conn.Exec(ctx, `INSERT INTO samples (ts_ms, ts, node, scope, target_id, zone, source, power_w, energy_j, delta_j,
				interval_ms, estimated, collector)
				SELECT ts_ms, toDateTime(intDiv(ts_ms, 1000)), node, 'process', target_id, '', 'rapl', 1.5, toFloat64(tick) * 1.5, 1.5 * ? / 1000,
				  toUInt32(?), 0, 'history'
				FROM (
				  SELECT number % ? AS series, intDiv(number, ?) AS tick, ? + tick * ? AS ts_ms,
				    concat(if(series % 80 < 4, 'n', 'h'), toString(series % 80)) AS node,
				    concat('process/hist/', toString(intDiv(series, 80))) AS target_id
				  FROM numbers(?))`, step, step, HistorySeries, HistorySeries, start, step, rowsPerDay); err != nil {
				return total, fmt.Errorf("generate the history of day %d: %w", d, err)
			}
			have = rowsPerDay
		}
		total += have
		if progress != nil {
			progress(d)
		}
	}
	return total, nil
}
