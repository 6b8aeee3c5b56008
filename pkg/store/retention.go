package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// SampleDay is one partition of the samples table: the samples of one day
// (the table is partitioned by toYYYYMMDD(ts) in the server's time zone).
type SampleDay struct {
	Day   uint32 // YYYYMMDD, the partition's id
	Rows  uint64
	Bytes uint64 // on disk, compressed
	// Runs is how many runs' spans (see RunDays) touch the day.
	Runs uint64
}

// runSpanMarginMs widens each run's span on both sides when deciding which
// days hold its samples: a baseline before the run's measured window is
// sampled before anything of it is recorded, its cool-down after, and
// collectors write late.
const runSpanMarginMs = 3_600_000

// SampleDays lists the samples table's day partitions, oldest first, each
// with the number of runs whose span touches it. A run's span is from its
// creation (the scheduler writes its record before anything of it runs) to
// the end of its measured window — for a run that ended without one (it
// failed or was cancelled before measuring), to the last time in its
// phases; for one still going, to now — widened by an hour on both sides
// (a failed run spanning to now kept every later day from being pruned); its days are counted in the server's time zone,
// as the partitions are.
func (s *Store) SampleDays(ctx context.Context) ([]SampleDay, error) {
	return queryAll(ctx, s.conn, "read the samples table's partitions", `
		SELECT day, rows, bytes, runs FROM (
		  SELECT toUInt32(partition) AS day, sum(rows) AS rows, sum(bytes_on_disk) AS bytes
		  FROM system.parts WHERE database = currentDatabase() AND table = 'samples' AND active
		  GROUP BY day
		)
		ANY LEFT JOIN (
		  SELECT day, count() AS runs FROM (
		    SELECT toYYYYMMDD(addDays(first, arrayJoin(range(toUInt32(last - first) + 1)))) AS day
		    FROM (
		      SELECT toDate(toDateTime(intDiv(greatest(created_ms - ?, 0), 1000))) AS first,
		             toDate(toDateTime(intDiv(multiIf(
		               measure_end_ms > 0, measure_end_ms,
		               state IN ('done', 'failed', 'cancelled'), greatest(created_ms,
		                 arrayReduce('max', arrayMap(x -> toInt64(x), extractAll(phases, '_ms":(\\d+)')))),
		               toInt64(toUnixTimestamp(now())) * 1000) + ?, 1000))) AS last
		      FROM runs FINAL
		    )
		  ) GROUP BY day
		) USING day
		ORDER BY day`, []any{int64(runSpanMarginMs), int64(runSpanMarginMs)}, func(rows driver.Rows, d *SampleDay) error {
		return rows.Scan(&d.Day, &d.Rows, &d.Bytes, &d.Runs)
	})
}

// DropSampleDay deletes one day partition of the samples table, whole.
func (s *Store) DropSampleDay(ctx context.Context, day uint32) error {
	if day < 19700101 || day > 99991231 {
		return fmt.Errorf("drop samples of day %d: not a YYYYMMDD day", day)
	}
	if err := s.conn.Exec(ctx, "ALTER TABLE samples DROP PARTITION "+strconv.FormatUint(uint64(day), 10)); err != nil {
		return fmt.Errorf("drop samples of day %d: %w", day, err)
	}
	return nil
}

// Today is the server's current day as YYYYMMDD, in its time zone (that of
// the partitions).
func (s *Store) Today(ctx context.Context) (uint32, error) {
	var d uint32
	if err := s.conn.QueryRow(ctx, "SELECT toYYYYMMDD(now())").Scan(&d); err != nil {
		return 0, fmt.Errorf("read the server's day: %w", err)
	}
	return d, nil
}
