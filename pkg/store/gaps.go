package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Gap reasons (table gaps).
const (
	GapSpoolFull     = "spool_full"     // samples dropped past the backlog bound
	GapFreshBaseline = "fresh_baseline" // a source restarted from a new baseline: the stretch before it is not measured
	GapStandby       = "standby"        // this instance stood by while another read the node's meter
	GapImplausible   = "implausible"    // a counter increase beyond plausible power, not counted
	// GapOutage: the meter went unread for more than two intervals (the
	// collector was down or stalled) and resumed from its checkpoint: one
	// sample spans the stretch — its energy is the counter's (or the
	// utilisation's over it), its time resolution is lost.
	GapOutage = "outage"
)

// Gap is a stretch [FromMs, ToMs] in which a source's samples of a node are
// missing or were not counted, with how many samples (0 when unknown) and
// why. Rows are keyed by (node, source, reason, from): a gap recorded again
// with a later end replaces the earlier row once merged; readers take the
// largest end.
type Gap struct {
	Node, Source string
	FromMs, ToMs int64
	Samples      uint64
	Reason       string
	Detail       string
	Collector    string
}

// InsertGaps records gaps.
func (s *Store) InsertGaps(ctx context.Context, gaps []Gap) error {
	return insertRows(ctx, s.conn, fmt.Sprintf("insert %d gaps", len(gaps)),
		"INSERT INTO gaps (node, source, from_ms, to_ms, samples, reason, detail, collector)", len(gaps), func(i int) []any {
			g := gaps[i]
			return []any{g.Node, g.Source, g.FromMs, g.ToMs, g.Samples, g.Reason, g.Detail, g.Collector}
		})
}

// GapsOverlapping returns the gaps of nodes that overlap [fromMs, toMs]
// (every node when nodes is empty), one per (node, source, reason, from)
// with its largest end and sample count, ordered by node, time and reason.
func (s *Store) GapsOverlapping(ctx context.Context, nodes []string, fromMs, toMs int64) ([]Gap, error) {
	q := `SELECT node, source, from_ms, max(to_ms), max(samples), reason, any(detail), any(collector) FROM gaps
		WHERE from_ms <= ? AND to_ms >= ?`
	args := []any{toMs, fromMs}
	if len(nodes) > 0 {
		q += " AND node IN ?"
		args = append(args, set(nodes))
	}
	q += " GROUP BY node, source, reason, from_ms ORDER BY node, from_ms, reason"
	return queryAll(ctx, s.conn, "read gaps", q, args, func(rows driver.Rows, g *Gap) error {
		return rows.Scan(&g.Node, &g.Source, &g.FromMs, &g.ToMs, &g.Samples, &g.Reason, &g.Detail, &g.Collector)
	})
}
