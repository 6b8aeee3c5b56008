-- Measurement validity (issue 14): what each run's meters were, where the
-- data has holes, and the power-model fits. New tables only: existing rows
-- stay as they are. ClickHouse 18.16 compatible, idempotent statements.

-- The effective meter configuration of a run on a node, one row per
-- (run, node, source) and change: the interval the run asked and the one
-- its node was sampled at (the finest any active run asked), the meter, and
-- for a model its profile (JSON: name, vCPUs, coefficients, calibration)
-- and label ("measured", "estimated", "estimated (calibrated on <node>)").
-- note says how a conflict between concurrent runs was resolved. Written
-- twice, a row collapses.
CREATE TABLE IF NOT EXISTS run_meters (
    experiment_id String,
    run_id String,
    node String,
    source_id String,
    ts_ms Int64,
    asked_interval_ms Int64,
    interval_ms Int64,
    asked_source String,
    meter String,
    estimated UInt8,
    label String,
    model String,
    note String,
    collector String
) ENGINE = ReplacingMergeTree()
ORDER BY (experiment_id, run_id, node, source_id, ts_ms);

-- Stretches in which a source's samples are missing or were not counted:
-- from_ms..to_ms, how many samples (0 when unknown) and why (spool_full:
-- dropped past the backlog bound; fresh_baseline: the source restarted from
-- a new baseline, its owner changed or its checkpoint was too old; standby:
-- this instance stood by for the node's meter; implausible: a counter
-- increase beyond the zone's plausible power, not counted). The analyzer
-- reports those touching a run's window.
CREATE TABLE IF NOT EXISTS gaps (
    node String,
    source String,
    from_ms Int64,
    to_ms Int64,
    samples UInt64,
    reason String,
    detail String,
    collector String
) ENGINE = ReplacingMergeTree()
ORDER BY (node, source, reason, from_ms);

-- Least-squares fits of a node's measured power (a hardware meter) on its
-- CPU utilisation: P = intercept_w + slope_w × u, with R², the residual
-- (root mean square, W) and the node facts the per-vCPU coefficients come
-- from. Nodes without a meter use the newest fit, labelled
-- "estimated (calibrated on <node>)".
CREATE TABLE IF NOT EXISTS power_calibrations (
    node String,
    source String,
    ts_ms Int64,
    samples UInt32,
    intercept_w Float64,
    slope_w Float64,
    r2 Float64,
    residual_w Float64,
    vcpus UInt32,
    cpu_model String,
    collector String
) ENGINE = ReplacingMergeTree()
ORDER BY (node, ts_ms);
