-- Analysis tables written by the analyzer. Like 0001: ClickHouse 18.16
-- compatible, idempotent statements only.

-- The measurement targets of each analysed run with their role (sut, broker,
-- loadgen, platform), so exports and reports can attribute sample series to
-- roles after the fact. Re-analysis writes a newer analyzed_ms; readers take
-- the newest analysis of each run.
CREATE TABLE IF NOT EXISTS run_targets (
    experiment_id String,
    run_id String,
    target_id String,
    kind String,
    node String,
    role String,
    analyzed_ms UInt64
) ENGINE = ReplacingMergeTree(analyzed_ms)
ORDER BY (experiment_id, run_id, target_id);

-- Per-configuration statistics across repetitions (runs sharing a
-- config_hash): one row per run-scope metric. sd, cv and the confidence
-- interval are NaN with fewer than two repetitions; cv_flag marks a CV above
-- the analyzer's threshold. Recomputed whenever a run of the configuration is
-- (re-)analysed; readers take the newest analyzed_ms of each configuration.
CREATE TABLE IF NOT EXISTS config_results (
    experiment_id String,
    config_hash String,
    factors String,
    metric String,
    unit String,
    n UInt32,
    mean Float64,
    sd Float64,
    cv Float64,
    ci_level Float64,
    ci_low Float64,
    ci_high Float64,
    median Float64,
    min Float64,
    max Float64,
    cv_flag UInt8,
    estimated UInt8,
    run_ids Array(String),
    analyzed_ms UInt64
) ENGINE = ReplacingMergeTree(analyzed_ms)
ORDER BY (experiment_id, config_hash, metric);
