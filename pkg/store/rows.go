package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// insertRows writes n rows in one batch, row(i) giving the values of row
// i in the query's column order. Every insert is a batch: ClickHouse 18.16
// does not accept `INSERT … VALUES` with client-bound values over the
// native protocol (it waits for a data block). what says what is written,
// for errors.
func insertRows(ctx context.Context, conn driver.Conn, what, query string, n int, row func(i int) []any) error {
	if n == 0 {
		return nil
	}
	return sendBatch(ctx, conn, what, query, func(batch driver.Batch) error {
		for i := range n {
			if err := batch.Append(row(i)...); err != nil {
				return fmt.Errorf("append row %d: %w", i, err)
			}
		}
		return nil
	})
}

// replaceAnalysis writes the rows of one analysis (of a run, or of a
// configuration) stamped with one new version: readers take the newest
// analysis whole, so re-analysis replaces the earlier rows, including those
// it no longer produces.
func replaceAnalysis[T any](ctx context.Context, conn driver.Conn, what, query string, rows []T, row func(r T, version uint64) []any) error {
	v := nowVersion()
	return insertRows(ctx, conn, what, query, len(rows), func(i int) []any { return row(rows[i], v) })
}

// replaceRunRows is replaceAnalysis for rows that carry their run, which
// the error names.
func replaceRunRows[T any](ctx context.Context, conn driver.Conn, what, query string, rows []T, runOf func(T) string, row func(r T, version uint64) []any) error {
	if len(rows) > 0 {
		what += " of run " + runOf(rows[0])
	}
	return replaceAnalysis(ctx, conn, what, query, rows, row)
}

// insertColumns writes one batch given column by column: columns[i] is a
// typed slice (e.g. []int64, []string) of the query's i-th column, all of
// one length (see insertRows).
func insertColumns(ctx context.Context, conn driver.Conn, what, query string, columns ...any) error {
	return sendBatch(ctx, conn, what, query, func(batch driver.Batch) error {
		for i, col := range columns {
			if err := batch.Column(i).Append(col); err != nil {
				return fmt.Errorf("append column %d: %w", i, err)
			}
		}
		return nil
	})
}

// sendBatch prepares a batch of query, fills it and sends it; a batch
// that could not be filled is aborted, not sent in part.
func sendBatch(ctx context.Context, conn driver.Conn, what, query string, fill func(driver.Batch) error) error {
	batch, err := conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("%s: prepare batch: %w", what, err)
	}
	if err := fill(batch); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// insertRow writes one row (see insertRows).
func insertRow(ctx context.Context, conn driver.Conn, what, query string, values ...any) error {
	return insertRows(ctx, conn, what, query, 1, func(int) []any { return values })
}

// query runs a query and calls each for every row (each scans it); what
// says what is read, for errors.
func query(ctx context.Context, conn driver.Conn, what, q string, args []any, each func(driver.Rows) error) error {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return fmt.Errorf("%s: scan: %w", what, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// queryAll runs a query and returns a T for every row, scan filling it in
// (each starts as the zero T); what says what is read, for errors.
func queryAll[T any](ctx context.Context, conn driver.Conn, what, q string, args []any, scan func(rows driver.Rows, v *T) error) ([]T, error) {
	var out []T
	err := query(ctx, conn, what, q, args, func(rows driver.Rows) error {
		var v T
		if err := scan(rows, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// queryStrings runs a query of one string column and returns its values.
func queryStrings(ctx context.Context, conn driver.Conn, what, q string, args ...any) ([]string, error) {
	return queryAll(ctx, conn, what, q, args, func(rows driver.Rows, v *string) error { return rows.Scan(v) })
}

// set binds a list for `col IN ?`. Callers return early on an empty list
// (`IN ()` is not SQL); should one not, a NUL string, which no node or
// target id holds, keeps it matching nothing, as has([], col) did.
func set(vals []string) any {
	if len(vals) == 0 {
		return clickhouse.GroupSet{Value: []any{"\x00"}}
	}
	v := make([]any, len(vals))
	for i, x := range vals {
		v[i] = x
	}
	return clickhouse.GroupSet{Value: v}
}

// inline replaces {NAME} in q with the integer vars[NAME]. Only integers
// are inlined (the long array expressions of the window queries repeat
// them many times); everything else is bound.
func inline(q string, vars map[string]int64) string {
	for k, v := range vars {
		q = strings.ReplaceAll(q, "{"+k+"}", fmt.Sprintf("toInt64(%d)", v))
	}
	return q
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// versionClock makes ReplacingMergeTree versions strictly increasing within a
// process even when two writes share a microsecond.
var versionClock struct {
	sync.Mutex
	last uint64
}

// nowVersion is the version of a row written now (µs since the epoch,
// strictly increasing within the process): the newest write of a row wins.
func nowVersion() uint64 {
	versionClock.Lock()
	defer versionClock.Unlock()
	v := uint64(time.Now().UnixMicro())
	if v <= versionClock.last {
		v = versionClock.last + 1
	}
	versionClock.last = v
	return v
}
