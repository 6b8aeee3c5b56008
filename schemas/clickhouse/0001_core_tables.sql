-- GreenFlow core tables. Works on ClickHouse 18.16 and current releases:
-- millisecond timestamps are Int64 epoch milliseconds (no DateTime64 on 18.16),
-- with a second-resolution DateTime beside them for partitioning and Grafana.
-- Every statement must be idempotent (IF NOT EXISTS): several services may
-- apply migrations at the same moment.

CREATE TABLE IF NOT EXISTS experiments (
    experiment_id String,
    name String,
    spec String,
    spec_hash String,
    runs_total UInt32,
    state String,
    labels String,
    greenflow_version String,
    git_commit String,
    environment String,
    seed Int64,
    created_ms Int64,
    updated_ms UInt64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY experiment_id;

CREATE TABLE IF NOT EXISTS runs (
    experiment_id String,
    run_id String,
    idx UInt32,
    repetition UInt32,
    config String,
    config_hash String,
    factors String,
    state String,
    reason String,
    phases String,
    measure_start_ms Int64,
    measure_end_ms Int64,
    created_ms Int64,
    updated_ms UInt64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY (experiment_id, run_id);

-- Raw meter samples, joined to runs by time window and target at analysis time.
-- energy_j is the collector's cumulative counter for the series (wraps resolved);
-- delta_j is the energy of the interval that ends at ts_ms, so a window's energy
-- is sum(delta_j) and survives collector restarts (which reset energy_j).
CREATE TABLE IF NOT EXISTS samples (
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
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (node, scope, target_id, zone, ts_ms);

-- Time series recorded during a run (load progress, Kafka offsets, lag...).
CREATE TABLE IF NOT EXISTS run_metrics (
    experiment_id String,
    run_id String,
    ts_ms Int64,
    name String,
    labels String,
    value Float64
) ENGINE = MergeTree()
ORDER BY (experiment_id, run_id, name, ts_ms);

-- Per-run results in long form; re-analysing a run replaces its rows.
CREATE TABLE IF NOT EXISTS results (
    experiment_id String,
    run_id String,
    scope String,
    subject String,
    metric String,
    value Float64,
    unit String,
    estimated UInt8,
    analyzed_ms UInt64
) ENGINE = ReplacingMergeTree(analyzed_ms)
ORDER BY (experiment_id, run_id, scope, subject, metric);
