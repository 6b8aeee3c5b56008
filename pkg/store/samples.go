package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/greenflow/greenflow/pkg/results"
)

// Sample is one meter reading for one series. A series — (Node, Scope,
// TargetID, Zone, Source) — has at most one sample per TsMs: that key
// identifies a sample, so writing the same sample twice is harmless (the
// samples table collapses rows with equal keys; readers that cannot wait
// for merges de-duplicate by the same key, as every query here does).
type Sample struct {
	TsMs       int64
	Node       string
	Scope      string // node | zone | process | pod | unattributed
	TargetID   string
	Zone       string
	Source     string // rapl | model | scaphandre | kepler | promql
	PowerW     float64
	EnergyJ    float64 // cumulative for the series since the collector started it
	DeltaJ     float64 // energy of the interval ending at TsMs
	IntervalMs uint32
	Estimated  bool
	Collector  string
}

// InsertSamples writes samples in one batch. It is idempotent by the
// sample's key (see Sample), so a batch may be retried after a timeout or
// rewritten by another collector.
//
// The batch is filled a column at a time — one typed slice each — which
// spares the driver a reflective conversion of every value of every row:
// this is the collectors' hot path (the row-at-a-time form reached 0.68× of
// a plain clickhouse-go insert of the same rows in the ingest benchmark).
func (s *Store) InsertSamples(ctx context.Context, samples []Sample) error {
	n := len(samples)
	if n == 0 {
		return nil
	}
	what := fmt.Sprintf("insert %d samples", n)
	var (
		tsMs                                       = make([]int64, n)
		ts                                         = make([]time.Time, n)
		node, scope, target, zone, source, collect = make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n)
		power, energy, delta = make([]float64, n), make([]float64, n), make([]float64, n)
		interval             = make([]uint32, n)
		estimated            = make([]uint8, n)
	)
	for i, x := range samples {
		tsMs[i], ts[i] = x.TsMs, time.UnixMilli(x.TsMs).UTC()
		node[i], scope[i], target[i], zone[i], source[i], collect[i] = x.Node, x.Scope, x.TargetID, x.Zone, x.Source, x.Collector
		power[i], energy[i], delta[i] = x.PowerW, x.EnergyJ, x.DeltaJ
		interval[i], estimated[i] = x.IntervalMs, b2u(x.Estimated)
	}
	return insertColumns(ctx, s.conn, what,
		"INSERT INTO samples (ts_ms, ts, node, scope, target_id, zone, source, power_w, energy_j, delta_j, interval_ms, estimated, collector)",
		tsMs, ts, node, scope, target, zone, source, power, energy, delta, interval, estimated, collect)
}

// SeriesWindow is one sample series' figures over a window [start, end],
// computed by ClickHouse from the series' de-duplicated, time-sorted
// samples (the analyzer's integration and gap policy, stated in its
// package comment, turns them into energy). A sample at ts covers
// (ts - interval, ts]; times are milliseconds, energies joules.
type SeriesWindow struct {
	Scope, TargetID, Node, Zone string
	Sources                     []string // the meters of the series, sorted
	Estimated                   bool     // some sample came from a model
	// PowerOnly: every delta is 0 and some power is not (a gauge exporter).
	PowerOnly bool
	// Samples is the number of samples whose interval overlaps the window;
	// PeakW the largest power among them.
	Samples uint64
	PeakW   float64
	// Gaps counts consecutive samples further apart than twice the later
	// one's interval with a stretch inside the window; GapMs and MaxGapMs
	// are their total and longest stretch in the window.
	Gaps          uint64
	GapMs         float64
	MaxGapMs      float64
	MaxIntervalMs int64
	// MedianIntervalMs is the series' usual sampling interval. A sample
	// whose interval is more than twice it, and over a second longer, is
	// stretched: the collector
	// could not read the meter for a while (it was down, or the meter did
	// not answer) and the next reading spans the whole time. Its energy is
	// the counter's and is right, but the series has no resolution there:
	// Stretches counts such samples in the window, StretchMs and
	// MaxStretchMs are their total and longest time beyond the usual
	// interval inside the window.
	MedianIntervalMs        int64
	Stretches               uint64
	StretchMs, MaxStretchMs float64
	// OverlapMs is window time that two samples of the series both cover
	// (a sample starting before its predecessor ended): the same stretch
	// measured twice, e.g. by two collectors reading one machine's meter.
	// One collector's samples abut exactly, so it is 0 unless something
	// measured twice. Collectors are the instances that wrote the series.
	OverlapMs  float64
	Collectors []string
	// Resets counts drops of the cumulative counter in the window (a
	// collector restart).
	Resets uint64
	// Counter figures: the deltas in the window (an edge sample in
	// proportion to its overlap), the gaps' stretches at the mean of their
	// end powers, and the window time the samples' intervals cover.
	CounterJ, CounterBridgedJ, CoveredMs float64
	// Gauge figures: the trapezoid integral of power clipped to the window,
	// its part over gaps, and the window time between the first and last
	// sample.
	TrapzJ, TrapzBridgedJ, GaugeSpanMs float64
}

// Every query of samples is shaped for the table's key and partitioning,
// so that its cost follows the run it reads, not the table's history:
//   - nodes are chosen with `node IN (…)` (set), which ClickHouse answers
//     from the primary key (node comes first in it); has(array, node) —
//     what these queries used before — is not analysed by 18.16's key
//     condition, so every analysis read the whole table (3.6 s at 27 M
//     rows, 17 s at 211 M);
//   - the time range is also given on ts, the partition key's column (a
//     partition a day), so that days outside the range are not read; ts is
//     ts_ms in whole seconds. A sample covers (ts_ms - interval_ms, ts_ms],
//     and a query for samples reaching into a window looks up to
//     maxSampleSpanMs past its end.
//
// maxSampleSpanMs is the longest interval a sample is looked for over: a
// collector's samples span its sampling interval, and one resuming after a
// pause longer than its MaxCheckpointAge (a minute by default) starts from a
// fresh baseline rather than writing a sample over the pause.
const maxSampleSpanMs = 3_600_000

// seriesWindowQuery computes SeriesWindow per series. The outer query
// works on each series' sorted (ts, interval, power, cumulative energy)
// points as arrays: ta/tb, pa/pb, ea/eb are consecutive pairs, wb the later
// sample's interval. Window bounds are inlined integers; the node list is
// bound.
//
// Samples are de-duplicated, one row per (node, scope, target_id, zone,
// source, ts_ms) — the key that identifies a sample — because a collector
// may write a row twice (a re-sent batch, a hand-over) and the table's
// merges that drop duplicates happen eventually, not before reads. It is
// done on each series' sorted array (drop a point whose time and source
// equal its predecessor's), which costs far less than a GROUP BY on the
// sample key over every sample: the one-hour benchmark's whole analysis
// takes 0.40 s this way against 0.67 s with the GROUP BY (0.23 s without
// de-duplication; best of three interleaved runs).
const seriesWindowQuery = `
SELECT scope, target_id, node, zone, toUInt8(est), sources, toUInt64(n), toFloat64(peak_w), toUInt8(power_only),
  toUInt64(gaps), toFloat64(gap_ms), toFloat64(max_gap_ms), toInt64(max_interval_ms), toFloat64(counter_bridged_j), toFloat64(trapz_j),
  toFloat64(trapz_bridged_j), toFloat64(gauge_span_ms), toUInt64(resets), toFloat64(counter_j), toFloat64(covered_ms),
  toInt64(med_interval_ms), toUInt64(stretches), toFloat64(stretch_ms), toFloat64(max_stretch_ms), toFloat64(overlap_ms), collectors
FROM (
  SELECT *,
    arrayMap(x -> x.1, pts) AS t, arrayMap(x -> x.2, pts) AS w, arrayMap(x -> x.3, pts) AS p, arrayMap(x -> x.4, pts) AS e,
    arrayMap(x -> x.5, pts) AS d,
    -- sums over the sorted arrays, not sum(): the same rows always add up
    -- in the same order, so re-analysis reproduces every bit
    arrayMap((b, x) -> b > {S} AND b - x < {E}, t, w) AS inwin,
    arraySum(inwin) AS n,
    arrayReduce('max', arrayMap((i, q) -> if(i, q, 0), inwin, p)) AS peak_w,
    arraySum(arrayMap((i, b, x, q) -> if(i AND x > 0, q * (least(b, {E}) - greatest(b - x, {S})) / x, 0), inwin, t, w, d)) AS counter_j,
    arraySum(arrayMap((i, b, x) -> if(i, least(b, {E}) - greatest(b - x, {S}), 0), inwin, t, w)) AS covered_ms,
    arrayPopBack(t) AS ta, arrayPopFront(t) AS tb, arrayPopFront(w) AS wb,
    arrayPopBack(p) AS pa, arrayPopFront(p) AS pb, arrayPopBack(e) AS ea, arrayPopFront(e) AS eb,
    -- gap flag per pair: further apart than twice the later interval
    arrayMap((a, b, x) -> x > 0 AND b - a > 2 * x, ta, tb, wb) AS isgap,
    -- the part of each pair's span inside the window that the later
    -- sample's interval does not cover (counters), or the whole segment
    -- (gauges)
    arrayMap((a, b, x) -> greatest(0, least(if(power_only, b, b - x), {E}) - greatest(a, {S})), ta, tb, wb) AS span_in,
    arraySum(arrayMap((g, s) -> g AND s > 0, isgap, span_in)) AS gaps,
    arraySum(arrayMap((g, s) -> if(g, s, 0), isgap, span_in)) AS gap_ms,
    arrayReduce('max', arrayPushBack(arrayMap((g, s) -> if(g, s, 0), isgap, span_in), toInt64(0))) AS max_gap_ms,
    arrayReduce('max', w) AS max_interval_ms,
    -- stretched samples: an interval over twice the series' median and a
    -- second longer (a reading a busy machine delays by a few hundred ms
    -- is not one); the time beyond the median inside the window
    toInt64(arrayReduce('median', w)) AS med_interval_ms,
    arrayMap((i, b, x) -> if(i AND x > greatest(2 * med_interval_ms, med_interval_ms + 1000),
        greatest(0, least(b - med_interval_ms, {E}) - greatest(b - x, {S})), 0), inwin, t, w) AS stretch_in,
    arraySum(arrayMap(s -> s > 0, stretch_in)) AS stretches,
    arraySum(stretch_in) AS stretch_ms,
    arrayReduce('max', arrayPushBack(stretch_in, toInt64(0))) AS max_stretch_ms,
    -- overlap: window time a sample's interval shares with its
    -- predecessor's (its start before the predecessor's end)
    -- (more than 2 ms: a reading's time and interval are each truncated
    -- to the millisecond)
    arraySum(arrayMap((a, b, x) -> if(a - (b - x) > 2, greatest(0, least(a, {E}) - greatest(b - x, {S})), 0), ta, tb, wb)) AS overlap_ms,
    -- counters: a gap's stretch at the mean of its end powers
    arraySum(arrayMap((g, s, q0, q1) -> if(g, s * (q0 + q1) / 2000, 0), isgap, span_in, pa, pb)) AS counter_bridged_j,
    -- gauges: the trapezoid of each segment clipped to the window, power
    -- interpolated linearly at the clip points
    arrayMap((a, b, q0, q1) -> if(b > a AND least(b, {E}) > greatest(a, {S}),
        (2 * q0 + (q1 - q0) * (greatest(a, {S}) + least(b, {E}) - 2 * a) / (b - a)) * (least(b, {E}) - greatest(a, {S})) / 2000, 0),
      ta, tb, pa, pb) AS seg_j,
    arraySum(seg_j) AS trapz_j,
    arraySum(arrayMap((g, j) -> if(g, j, 0), isgap, seg_j)) AS trapz_bridged_j,
    greatest(0, least(t[length(t)], {E}) - greatest(t[1], {S})) AS gauge_span_ms,
    -- a drop of the cumulative counter: the collector restarted
    arraySum(arrayMap((b, x, y) -> y < x AND b > {S} AND b <= {E}, tb, ea, eb)) AS resets
  FROM (
    SELECT *,
      -- one sample per (ts_ms, source) of the series: rows sharing the
      -- key are neighbours once sorted by time (ties between two sources
      -- at one instant only arise with two meters in one series, which
      -- quality_mixed_sources reports), and only the first is kept
      arrayMap(x -> (x.1, x.6), upts) AS ukeys,
      arrayFilter((x, k, prev) -> k != prev, upts, ukeys, arrayPushFront(arrayPopBack(ukeys), (toInt64(-1), ''))) AS pts,
      arrayExists(x -> x.7 = 1, pts) AS est,
      arraySum(arrayMap(x -> abs(x.5), pts)) = 0 AND arrayExists(x -> x.3 > 0, pts) AS power_only
    FROM (
      SELECT scope, target_id, node, zone, groupUniqArray(source) AS sources, arraySort(groupUniqArray(collector)) AS collectors,
        arraySort(x -> x.1, groupArray((ts_ms, toInt64(interval_ms), power_w, energy_j, delta_j, source, estimated))) AS upts
      FROM samples
      WHERE node IN ? AND scope IN ('node', 'zone', 'process', 'pod', 'unattributed')
        AND ts >= toDateTime(intDiv({S} - {M}, 1000)) AND ts <= toDateTime(intDiv({E} + {M} + {X}, 1000))
        AND ts_ms >= {S} - {M} AND ts_ms - interval_ms <= {E} + {M}
      GROUP BY scope, target_id, node, zone
    )
  )
)
ORDER BY scope, target_id, node, zone`

// SeriesInWindow returns the figures of every series on nodes with
// samples within marginMs of the window [startMs, endMs] (the margin finds
// the neighbours of the first and last sample in it: gaps, interpolation),
// ordered by scope, target, node and zone.
func (s *Store) SeriesInWindow(ctx context.Context, nodes []string, startMs, endMs, marginMs int64) ([]SeriesWindow, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	return s.seriesWindows(ctx, seriesWindowQuery, "", nodes, startMs, endMs, marginMs)
}

// seriesWindows runs a series query (seriesWindowQuery or one grouped
// further) over the window; what is said in its error.
func (s *Store) seriesWindows(ctx context.Context, text, what string, nodes []string, startMs, endMs, marginMs int64) ([]SeriesWindow, error) {
	q := inline(text, map[string]int64{"S": startMs, "E": endMs, "M": marginMs, "X": maxSampleSpanMs})
	return queryAll(ctx, s.conn, fmt.Sprintf("read series%s in window [%d, %d]", what, startMs, endMs), q, []any{set(nodes)}, func(rows driver.Rows, x *SeriesWindow) error {
		var est, powerOnly uint8
		if err := rows.Scan(&x.Scope, &x.TargetID, &x.Node, &x.Zone, &est, &x.Sources, &x.Samples, &x.PeakW, &powerOnly, &x.Gaps, &x.GapMs,
			&x.MaxGapMs, &x.MaxIntervalMs, &x.CounterBridgedJ, &x.TrapzJ, &x.TrapzBridgedJ, &x.GaugeSpanMs, &x.Resets, &x.CounterJ,
			&x.CoveredMs, &x.MedianIntervalMs, &x.Stretches, &x.StretchMs, &x.MaxStretchMs, &x.OverlapMs, &x.Collectors); err != nil {
			return err
		}
		x.Estimated, x.PowerOnly = est == 1, powerOnly == 1
		sort.Strings(x.Sources)
		return nil
	})
}

// roleOf is the expression naming a sample's role in the queries below,
// with its arguments: the unattributed rest of a node, the role of one of
// the targets (roles maps target ids to roles), or other processes.
func roleOf(roles map[string]string) (string, []any) {
	if len(roles) == 0 { // transform() cannot take empty arrays
		return `if(scope = '` + results.RoleUnattributed + `', '` + results.RoleUnattributed + `', '` + results.RoleOther + `')`, nil
	}
	ids := slices.Sorted(maps.Keys(roles))
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = roles[id]
	}
	return `if(scope = '` + results.RoleUnattributed + `', '` + results.RoleUnattributed + `', transform(target_id, ?, ?, '` + results.RoleOther + `'))`,
		[]any{ids, names}
}

// RolePeakPower is each role's peak power in the window (startMs, endMs]
// on nodes: the largest sum of its series' power at one sampling instant.
// roles maps target ids to roles; other processes are results.RoleOther,
// the nodes' unattributed rest results.RoleUnattributed.
func (s *Store) RolePeakPower(ctx context.Context, nodes []string, startMs, endMs int64, roles map[string]string) (map[string]float64, error) {
	out := map[string]float64{}
	if len(nodes) == 0 {
		return out, nil
	}
	role, args := roleOf(roles)
	// A sample written twice counts once: within a role and an instant, the
	// (series, power) pairs are taken as a set — a series being its scope,
	// target_id (which names the node for the unattributed rest) and source;
	// these scopes have no zone — hashed, which costs far less than a GROUP
	// BY on the sample key's strings (that one took 0.4 s of the one-hour
	// benchmark's analysis).
	q := inline(`SELECT role, max(w) FROM (
		SELECT role, ts_ms, arraySum(arraySort(arrayMap(x -> x.2, groupUniqArray((sk, power_w))))) AS w
		FROM (
		  SELECT `+role+` AS role, ts_ms, power_w, cityHash64(scope, target_id, source) AS sk
		  FROM samples
		  WHERE node IN ? AND scope IN ('process', 'pod', 'unattributed')
		    AND ts >= toDateTime(intDiv({S}, 1000)) AND ts <= toDateTime(intDiv({E} + {X}, 1000))
		    AND ts_ms > {S} AND ts_ms - interval_ms < {E})
		GROUP BY role, ts_ms)
		GROUP BY role`, map[string]int64{"S": startMs, "E": endMs, "X": maxSampleSpanMs})
	err := query(ctx, s.conn, fmt.Sprintf("read role peak power in (%d, %d]", startMs, endMs), q, append(args, set(nodes)), func(rows driver.Rows) error {
		var r string
		var w float64
		if err := rows.Scan(&r, &w); err != nil {
			return err
		}
		out[r] = w
		return nil
	})
	return out, err
}

// NodesSampledFrom returns those of nodes with a node-total sample at or
// after fromMs.
func (s *Store) NodesSampledFrom(ctx context.Context, nodes []string, fromMs int64) ([]string, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	return queryStrings(ctx, s.conn, fmt.Sprintf("read nodes sampled from %d", fromMs),
		`SELECT DISTINCT node FROM samples WHERE node IN ? AND scope = 'node' AND ts >= toDateTime(intDiv(?, 1000)) AND ts_ms >= ?
		ORDER BY node`, set(nodes), fromMs, fromMs)
}

// TargetsSampled returns those of the target ids with a process or pod
// sample on nodes within [fromMs, toMs].
func (s *Store) TargetsSampled(ctx context.Context, nodes, ids []string, fromMs, toMs int64) ([]string, error) {
	if len(nodes) == 0 || len(ids) == 0 {
		return nil, nil
	}
	return queryStrings(ctx, s.conn, fmt.Sprintf("read samples of targets %v", ids), `SELECT DISTINCT target_id FROM samples
		WHERE node IN ? AND scope IN ('process', 'pod') AND target_id IN ?
		  AND ts >= toDateTime(intDiv(?, 1000)) AND ts <= toDateTime(intDiv(?, 1000)) AND ts_ms >= ? AND ts_ms <= ? ORDER BY target_id`,
		set(nodes), set(ids), fromMs, toMs, fromMs, toMs)
}

// EachSample calls fn for every sample in (fromMs, toMs] — on nodes, or on
// every node when nodes is empty — once per sample key (a row the collector
// wrote twice comes once, merged or not), ordered by time, node, scope,
// target, zone and source. EnergyJ and Collector are not read.
func (s *Store) EachSample(ctx context.Context, nodes []string, fromMs, toMs int64, fn func(Sample) error) error {
	q := `SELECT ts_ms, node, scope, target_id, zone, source, v.1, v.2, v.3, v.4 FROM (
		SELECT ts_ms, node, scope, target_id, zone, source, any((power_w, delta_j, interval_ms, estimated)) AS v FROM samples
		WHERE ts >= toDateTime(intDiv(?, 1000)) AND ts <= toDateTime(intDiv(?, 1000)) AND ts_ms > ? AND ts_ms <= ?`
	args := []any{fromMs, toMs, fromMs, toMs}
	if len(nodes) > 0 {
		q += " AND node IN ?"
		args = append(args, set(nodes))
	}
	q += " GROUP BY ts_ms, node, scope, target_id, zone, source) ORDER BY ts_ms, node, scope, target_id, zone, source"
	return query(ctx, s.conn, fmt.Sprintf("read samples in (%d, %d]", fromMs, toMs), q, args, func(rows driver.Rows) error {
		var x Sample
		var est uint8
		if err := rows.Scan(&x.TsMs, &x.Node, &x.Scope, &x.TargetID, &x.Zone, &x.Source, &x.PowerW, &x.DeltaJ, &x.IntervalMs, &est); err != nil {
			return err
		}
		x.Estimated = est == 1
		return fn(x)
	})
}

// PowerBucket is the mean power of one component in one time bucket.
type PowerBucket struct {
	Bucket    int64 // bucket index from the span's start
	Component string
	W         float64
}

// PowerOverTime averages power in buckets of bucketMs over (fromMs, toMs]
// per component: each node's total ("node <name>"), the roles of the
// targets (roles maps target ids to roles), other processes
// (results.RoleOther) and the unattributed rest (results.RoleUnattributed).
// Within a component a bucket is the sum over its series of each series'
// mean, samples de-duplicated by key first. nodes limits the nodes when
// not empty. Ordered by component and bucket.
func (s *Store) PowerOverTime(ctx context.Context, nodes []string, fromMs, toMs, bucketMs int64, roles map[string]string) ([]PowerBucket, error) {
	role, roleArgs := roleOf(roles)
	args := append(append([]any{fromMs, bucketMs}, roleArgs...), fromMs, toMs, fromMs, toMs)
	q := `SELECT b, comp, sum(w) FROM (
		SELECT intDiv(ts_ms - ?, ?) AS b, if(scope = 'node', concat('node ', node), ` + role + `) AS comp,
		       node, scope, target_id, avg(power_w) AS w
		FROM (
		  SELECT ts_ms, node, scope, target_id, zone, source, any(power_w) AS power_w FROM samples
		  WHERE ts >= toDateTime(intDiv(?, 1000)) AND ts <= toDateTime(intDiv(?, 1000)) AND ts_ms > ? AND ts_ms <= ?
		    AND scope IN ('node', 'process', 'pod', 'unattributed')`
	if len(nodes) > 0 {
		q += " AND node IN ?"
		args = append(args, set(nodes))
	}
	q += ` GROUP BY ts_ms, node, scope, target_id, zone, source)
		GROUP BY b, comp, node, scope, target_id) GROUP BY b, comp ORDER BY comp, b`
	return queryAll(ctx, s.conn, fmt.Sprintf("read power in (%d, %d]", fromMs, toMs), q, args, func(rows driver.Rows, p *PowerBucket) error {
		return rows.Scan(&p.Bucket, &p.Component, &p.W)
	})
}

// ComponentPower is one component's mean power over a window and whether
// any of its samples came from a power model (estimated).
type ComponentPower struct {
	Component string
	W         float64
	Estimated bool
}

// RecentPower is PowerOverTime over one bucket, (fromMs, toMs], with each
// component's estimated flag: the console's live power per role.
func (s *Store) RecentPower(ctx context.Context, nodes []string, fromMs, toMs int64, roles map[string]string) ([]ComponentPower, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	role, roleArgs := roleOf(roles)
	args := append(roleArgs, fromMs, toMs, fromMs, toMs, set(nodes))
	q := `SELECT comp, sum(w), max(est) FROM (
		SELECT if(scope = 'node', concat('node ', node), ` + role + `) AS comp, node, scope, target_id, avg(power_w) AS w, max(estimated) AS est
		FROM (
		  SELECT ts_ms, node, scope, target_id, zone, source, any(power_w) AS power_w, any(estimated) AS estimated FROM samples
		  WHERE ts >= toDateTime(intDiv(?, 1000)) AND ts <= toDateTime(intDiv(?, 1000)) AND ts_ms > ? AND ts_ms <= ?
		    AND scope IN ('node', 'process', 'pod', 'unattributed') AND node IN ?
		  GROUP BY ts_ms, node, scope, target_id, zone, source)
		GROUP BY comp, node, scope, target_id) GROUP BY comp ORDER BY comp`
	return queryAll(ctx, s.conn, fmt.Sprintf("read recent power in (%d, %d]", fromMs, toMs), q, args, func(rows driver.Rows, p *ComponentPower) error {
		var est uint8
		if err := rows.Scan(&p.Component, &p.W, &est); err != nil {
			return err
		}
		p.Estimated = est == 1
		return nil
	})
}

// SeriesWatermark is how far one meter's durable samples of a node's total
// or of a target reach: its first and latest stored sample (from the
// query's start).
type SeriesWatermark struct {
	Node, Scope, TargetID, Source string
	FirstMs, LatestMs             int64
}

// SampleWatermarks returns the watermark of every node-total series on
// nodes and every process or pod series of the target ids, per source, among
// the series with samples at or after fromMs, ordered by node, scope, target
// and source.
func (s *Store) SampleWatermarks(ctx context.Context, nodes, targetIDs []string, fromMs int64) ([]SeriesWatermark, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	return queryAll(ctx, s.conn, fmt.Sprintf("read sample watermarks from %d", fromMs), `SELECT node, scope, target_id, source, min(ts_ms), max(ts_ms) FROM samples
		WHERE node IN ? AND ts >= toDateTime(intDiv(?, 1000)) AND ts_ms >= ?
		  AND (scope = 'node' OR (scope IN ('process', 'pod') AND target_id IN ?))
		GROUP BY node, scope, target_id, source ORDER BY node, scope, target_id, source`,
		[]any{set(nodes), fromMs, fromMs, set(append([]string{""}, targetIDs...))},
		func(rows driver.Rows, w *SeriesWatermark) error {
			return rows.Scan(&w.Node, &w.Scope, &w.TargetID, &w.Source, &w.FirstMs, &w.LatestMs)
		})
}

// seriesBySourceQuery is seriesWindowQuery with a series per meter: the
// sample key's source joins the grouping, so two meters of one node (RAPL
// beside a Kepler exporter, a model beside RAPL) give two series, each with
// its own energy, gaps and overlap.
var seriesBySourceQuery = func() string {
	const from, to = "GROUP BY scope, target_id, node, zone\n", "GROUP BY scope, target_id, node, zone, source\n"
	if !strings.Contains(seriesWindowQuery, from) {
		panic("store: seriesWindowQuery lost its GROUP BY; seriesBySourceQuery must follow it")
	}
	q := strings.Replace(seriesWindowQuery, from, to, 1)
	return strings.Replace(q, "ORDER BY scope, target_id, node, zone", "ORDER BY scope, target_id, node, zone, sources", 1)
}()

// SeriesBySourceInWindow is SeriesInWindow with one series per source (each
// SeriesWindow's Sources has one element): where SeriesInWindow shows a
// series with several sources, this says whether they took turns (a meter
// changed) or measured the same thing at once, and what each measured.
func (s *Store) SeriesBySourceInWindow(ctx context.Context, nodes []string, startMs, endMs, marginMs int64) ([]SeriesWindow, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	return s.seriesWindows(ctx, seriesBySourceQuery, " by source", nodes, startMs, endMs, marginMs)
}
