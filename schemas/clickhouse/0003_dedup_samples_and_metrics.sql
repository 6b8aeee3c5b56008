-- Rows written twice collapse into one. A collector that takes over a source
-- from a crashed one first rewrites the rows its predecessor committed, which
-- may already be stored; a load.progress redelivered after a NATS outage is
-- recorded again. Both tables become ReplacingMergeTree keyed by what
-- identifies a row, so such duplicates merge away.
--
-- Merges are eventual: readers must not count on them, and de-duplicate by the
-- same key (e.g. FINAL, or any()/argMax() grouped by the key):
--   samples:     (node, scope, target_id, zone, source, ts_ms) — a series has at
--                most one sample per millisecond. source is new in the key: two
--                meters of one node no longer collide.
--   run_metrics: (experiment_id, run_id, name, labels, ts_ms).
--
-- `-- greenflow:replace-table T` makes the migrator replace table T by the one
-- the next CREATE statement declares, keeping T's rows: it creates the new
-- table, swaps the names (RENAME TABLE T TO T_before_0003, new TO T), and
-- copies the old rows over; the old table stays as T_before_0003 (drop it by
-- hand once satisfied). Rows written during the swap land in one table or the
-- other and are all copied; several services migrating at once each copy,
-- which the new engine collapses. ClickHouse 18.16 compatible.

-- greenflow:replace-table samples
CREATE TABLE IF NOT EXISTS samples_0003 (
    ts_ms Int64,
    ts DateTime,
    node String,
    scope String,
    target_id String,
    zone String,
    source String,
    power_w Float64,
    energy_j Float64,
    delta_j Float64,
    interval_ms UInt32,
    estimated UInt8,
    collector String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (node, scope, target_id, zone, source, ts_ms);

-- greenflow:replace-table run_metrics
CREATE TABLE IF NOT EXISTS run_metrics_0003 (
    experiment_id String,
    run_id String,
    ts_ms Int64,
    name String,
    labels String,
    value Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (experiment_id, run_id, name, labels, ts_ms);
