// Package analyzer turns a measured run into results and keeps the
// per-configuration statistics across repetitions up to date.
//
// Per run, over the recorded measurement window (the scheduler's phase
// timestamps, not the nominal duration): energy, mean and peak power per
// node, per measurement zone, per target (process or pod) and per role (sut,
// broker, loadgen, platform, other = processes measured on the run's nodes
// that are not its targets, unattributed = the node's idle/system rest);
// dynamic energy above the run's own baseline phase; events (from the load
// generator's progress series), throughput, energy per event and per MB,
// events per joule; Theodolite's lag-trend SLO; the collectors' CPU overhead;
// and data-quality flags. Per-series sums, gap detection and the trapezoid
// integration run in ClickHouse (pkg/store's SeriesInWindow); Go only
// combines the per-series rows.
//
// # Shape
//
// An analysis is gather, compute, write: gather (gather.go) reads every
// input of a run from the store into Inputs — the only I/O; Compute
// (compute.go, its rows in rows.go) is a pure function from Inputs to the
// result rows and the run.analyzed event, with the verdict (Judge,
// verdict.go) one pure part of it; AnalyzeAndStore writes the rows, the
// run's targets and its configuration's statistics (summary.go, itself
// gather, summarize, write). Result metric names, units and scopes come
// from pkg/results.
//
// # Integration and gap policy
//
// A series is one (node, scope, target, zone) stream of samples. Each sample
// at ts carries the energy of the interval (ts - interval, ts].
//
//   - Counter-backed series (the collector writes per-interval delta_j, wraps
//     already resolved): energy is the sum of the deltas, a sample straddling
//     a window edge counting in proportion to its overlap with the window.
//   - Power-only series (every delta_j is 0 and some power_w is not, e.g. a
//     gauge exporter): power is integrated by the trapezoid rule between
//     consecutive samples, interpolated linearly at the window edges.
//   - A gap is a pair of consecutive samples further apart than twice the
//     later sample's interval. Its uncovered stretch — (earlier ts, later ts
//   - interval] for counters, the whole segment for gauges — is bridged
//     with the mean of the two samples' powers (the trapezoid rule), so a
//     lost batch of samples does not silently lower the energy. Every gap is
//     counted (quality_sample_gaps), and its length and bridged energy are
//     reported (quality_gap_s, quality_bridged_energy_j). Shorter stretches
//     are timestamp rounding and are ignored.
//   - Nothing is extrapolated beyond the first or last sample: window time
//     without a sample interval or bridged gap is reported as
//     quality_uncovered_s (it includes millisecond rounding).
//   - A drop of a series' cumulative energy_j means the collector restarted
//     (quality_counter_resets); deltas stay valid across it.
//   - quality_estimated_source is 1 when a node's numbers come from the
//     utilisation model instead of a hardware counter (the run row counts
//     such nodes), quality_mixed_sources when a node's series changed meter
//     within the window (sources taking turns; two meters at once are
//     separated, see crossmeter.go, and compared in
//     quality_cross_meter_residual_j; a node measured by its wattmeter and
//     RAPL at once also gets quality_wattmeter_rapl_residual_j, wattmeter
//     minus RAPL, and _pct of the wattmeter's energy — RAPL covers the
//     packages and DRAM only, the wattmeter the whole node at the wall, so
//     it is expected positive), integrated_from_power when it had
//     only power, and
//     quality_attribution_residual_j is node energy minus the sum of its
//     parts (targets, other processes, unattributed), 0 when attribution
//     conserves energy.
//
// Bytes per event: no byte counter is recorded, so data volume is events ×
// the mean size of a UC-3 record as the load generator encodes it (key plus
// value, Confluent Avro or JSON, averaged over the run's sensor ids), computed
// from the run's workload config and labelled by data_mb_from_workload = 1.
// MB is 10^6 bytes.
//
// # Verdict
//
// A run keeps the platform's invariant — and may end done — only if its
// measured window had the offered load delivered, complete samples for
// every node and target, and a live system under test throughout. Judge
// decides it from gathered numbers (a pure function); a run that breaks it
// is analysed as invalid (run.analyzed invalid, with the reason), and the
// scheduler fails it. What was recovered or bridged is flagged (run.analyzed
// flags, and run-scope rows flag_<name> = 1).
//
//   - Load: the events of the window are counted at the broker — the
//     kafka_input_high_watermark run metric interpolated at the window edges,
//     when it has samples at most BrokerEdgeSpan apart around both — or else
//     from the generators' cumulative load_records_sent series. Short of
//     offered rate × window by more than LoadTolerance of it plus
//     LoadEdgeSlack's worth of load: invalid; beyond that in surplus (a
//     catch-up after a stall): flag load_surplus. No series at all:
//     invalid, the window's load cannot be checked. The defaults, 2 % +
//     200 ms, come from undisturbed runs on a shared 2-core machine (the
//     README says how): their shortfall is a fixed count — records due
//     just before an edge delivered just after it, up to ~90 ms of load —
//     not a share of the window, so short windows need the slack and long
//     ones are held to about 2 %; a stalled generator, a takeover that
//     missed records or a broker outage costs far more.
//   - Samples: per node total and per target series of the run, a bridged
//     gap longer than max(MaxBridgedGap, MaxBridgedIntervals × the series'
//     sampling interval) — 3 s or 3 intervals by default: a collector
//     hand-over (about 1.4 s) fits, a dead meter does not — or window time
//     no sample covers beyond MaxUncovered (1 s): invalid. A bridged gap
//     within the bound: flag energy_gap_bridged. A node without samples in
//     the window, or a target measured during the run but not in the window
//     (it stopped): invalid. A target the meters never saw at all (e.g. a
//     pod whose containers no meter can attribute): flag target_unmeasured,
//     since its figures are missing, not wrong.
//   - The load generator's account (run.measured, from load.finished):
//     flags load_takeover, load_restart, load_backfilled, load_missed, with
//     the counts as rows (load_takeovers, load_restarts, records_backfilled,
//     records_missed).
//   - The load's rate second by second (loadtruth.go): flag
//     load_rate_deviation when a whole second of the schedule inside the
//     window delivered more than 1 % off its offered records, or the
//     schedule started inside the window.
//   - The meters asked (meterfallback.go): flag meter_fallback when the
//     run asked RAPL and a node of it was recorded (run_meters) measured
//     by another meter, the model on a node without readable RAPL.
//
// Before analysing, the handler checks that every node has a sample at or
// past the window end, that every source of a node total or target with
// samples in the window reaches its end (a per-source watermark; a source
// replaced within the window is not waited for) and that a load series
// reached it (collectors write in batches; progress is recorded from the
// bus); until then it fails and the
// bus redelivers the message with backoff, holding no consumer slot. After
// SamplesWait from the window end it goes ahead with what there is, flags
// samples_late and records what was missing (quality_late_s).
//
// Reads de-duplicate: a sample is identified by (node, scope, target_id,
// zone, source, ts_ms) and a run metric point by (name, labels, ts_ms); a
// row written twice counts once whether or not the table merged it yet.
//
// Lag trend (Theodolite's SLO): the run metric kafka_consumer_lag, summed over
// its label sets, is sampled every LagStep (each label set's latest sample at
// or before the instant, and not before the fit's start) from the fit's start
// to the window end, and its Theil–Sen slope in messages/s, with Sen's
// confidence interval, is compared with the threshold: sustained when the
// interval is below it, not sustained when at or above it, unresolved
// (flag lag_verdict_unresolved) when it contains it. The threshold and the warm-up are the run's spec's
// (slos.lagTrendSlope, slos.lagWarmup) — the flags only when the spec states
// none — and the fit starts at the load's start plus the warm-up, never
// before the measurement window: a lag sampled before the load (0) carried
// into the fit made the slope grow with the rate whatever the lag did.
// Without samples after the fit's start, or with fewer than LagMinPoints
// instants, no slope and no verdict are reported.
package analyzer
