-- Tables for dashboards (issue 18): what a Grafana panel needs to select one
-- run's or experiment's samples by id and role, draw its phases and filter by
-- a factor, with plain WHERE … IN (SELECT …) and no time-window join written
-- by hand. ClickHouse 18.16 compatible, idempotent statements; existing
-- tables keep every row.
--
-- Why the analyzer writes them (not the collectors at sampling time): a
-- sample is taken before anyone knows which run it will belong to (the
-- collectors sample nodes continuously, several runs may share a node over
-- time, a run is only tied to its window once it has been measured), and
-- the analyzer is the one service that holds all of a run's facts at once
-- (run.measured: config hash, factors, repetition, phases, windows,
-- targets with roles). Writing them with the results keeps them consistent
-- with what the results were computed from; re-analysis rewrites them.

-- One row per phase of a run (not "run_windows": a Go file of that name
-- would build for Windows only) as the scheduler recorded it (baseline,
-- warmup, measuring, cooldown, …) plus "window", the measured window the
-- results cover. DateTime start/end for Grafana's time filter and
-- annotations (second resolution; start_ms/end_ms keep the milliseconds).
-- Re-analysis writes a newer analyzed_ms; FINAL reads the newest.
CREATE TABLE IF NOT EXISTS run_phases (
    experiment_id String,
    run_id String,
    config_hash String,
    repetition UInt32,
    phase String,
    start_time DateTime,
    end_time DateTime,
    start_ms Int64,
    end_ms Int64,
    analyzed_ms UInt64
) ENGINE = ReplacingMergeTree(analyzed_ms)
ORDER BY (experiment_id, run_id, phase);

-- Runs measured before this table existed get their measured window from
-- the runs table (analyzed_ms 0: an analysis's own rows replace these).
INSERT INTO run_phases (experiment_id, run_id, config_hash, repetition, phase, start_time, end_time, start_ms, end_ms, analyzed_ms)
SELECT experiment_id, run_id, config_hash, repetition, 'window',
       toDateTime(intDiv(measure_start_ms, 1000)), toDateTime(intDiv(measure_end_ms + 999, 1000)),
       measure_start_ms, measure_end_ms, 0
FROM runs FINAL WHERE measure_start_ms > 0 AND measure_end_ms > measure_start_ms;

-- A run's factors as one row each (factor, value; value_num the value as a
-- number, NaN when it is not one), so a panel or a template variable can
-- filter and group by a factor without reading the runs' JSON.
CREATE TABLE IF NOT EXISTS run_factors (
    experiment_id String,
    run_id String,
    config_hash String,
    factor String,
    value String,
    value_num Float64,
    analyzed_ms UInt64
) ENGINE = ReplacingMergeTree(analyzed_ms)
ORDER BY (experiment_id, run_id, factor);

-- run_metrics gets a second-resolution DateTime beside ts_ms, as samples
-- has, so Grafana's $__timeFilter(ts) applies. It defaults to ts_ms's second:
-- writers keep writing ts_ms only. 18.16 has no ADD COLUMN IF NOT EXISTS
-- (a second migrator's ALTER would fail), so the table is replaced, keeping
-- its rows (see 0003): the copied rows get ts computed from their ts_ms.
-- DEFAULT, not MATERIALIZED: a later replacement copies columns by name,
-- and a MATERIALIZED column cannot be inserted into.

-- greenflow:replace-table run_metrics
CREATE TABLE IF NOT EXISTS run_metrics_0005 (
    experiment_id String,
    run_id String,
    ts_ms Int64,
    ts DateTime DEFAULT toDateTime(intDiv(ts_ms, 1000)),
    name String,
    labels String,
    value Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (experiment_id, run_id, name, labels, ts_ms);
