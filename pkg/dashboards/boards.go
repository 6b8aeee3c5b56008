package dashboards

import (
	"fmt"
	"strings"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Board is one dashboard as data: what the generator builds and what the
// tests run.
type Board struct {
	UID, Title, Description string
	Vars                    []Variable
	Annotations             []Annotation
	Panels                  []Panel
}

// Variable is a template variable backed by a ClickHouse query.
type Variable struct {
	Name, Label, SQL string
	Multi            bool // several values, with an All option
	// TimeRange: the options depend on the dashboard's time range (refresh
	// them when it changes).
	TimeRange bool
}

// Annotation is an annotation query (time, timeEnd, text, tags columns).
type Annotation struct {
	Name, SQL string
}

// Panel kinds.
const (
	KindTimeSeries = "timeseries"
	KindTable      = "table"
)

// Panel is one panel: ClickHouse queries (SQL) or Prometheus ones (PromQL).
type Panel struct {
	Kind, Title, Description string
	// Unit is a time series' unit; a table's units are per column
	// (Units), as its columns hold different quantities.
	Unit          string
	Units         map[string]string
	SQL           []PanelSQL
	PromQL        []PromQuery
	Width, Height uint32
	// Links are data links on a table column: a click opens URL with
	// the row's fields (${__data.fields.<column>}) filled in.
	Links []FieldLink
}

// FieldLink is a data link on the values of one column.
type FieldLink struct{ Column, Title, URL string }

// PanelSQL is one ClickHouse query of a panel with what its result must
// hold: Columns are its columns by name; Empty says why the query may
// return no rows on an undisturbed run (e.g. a gap table), "" when it
// must return rows.
type PanelSQL struct {
	Format  int
	SQL     string
	Columns []string
	Empty   string
}

// PromQuery is one PromQL query of a panel with its legend.
type PromQuery struct{ Expr, Legend string }

// Run metric series the analyzer reads (services/analyzer gather.go; the
// dashboards' test fails when a renamed series leaves a panel empty).
const (
	seriesRecordsSent   = "load_records_sent"
	seriesHighWatermark = "kafka_input_high_watermark"
	seriesConsumerLag   = "kafka_consumer_lag"
)

// Boards returns every dashboard.
func Boards() []Board {
	return []Board{experimentOverview(), runDetail(), nodesAndMeters(), platformHealth()}
}

// Reusable pieces of SQL.
const (
	experimentVar = "${experiment:singlequote}"
	runVar        = "${run:singlequote}"
	// configFilter keeps the selected configurations.
	configFilter = "$__conditionalAll(config_hash IN (${configuration:singlequote}), $configuration)"
	// bucket is a time-series bucket of $__interval_s seconds.
	bucket = "toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s)"
)

// newestResults keeps each run's newest analysis in table results (older
// analyses' rows of a metric the newest lacks would otherwise show).
func newestResults(where string) string {
	return "(run_id, analyzed_ms) IN (SELECT run_id, max(analyzed_ms) FROM results WHERE " + where + " GROUP BY run_id)"
}

// runScalar is one run-scope result of the selected run, as a scalar.
func runScalar(metric string) string {
	return fmt.Sprintf("(SELECT argMax(value, analyzed_ms) FROM results WHERE run_id = %s AND scope = 'run' AND subject = '' AND metric = '%s')",
		runVar, metric)
}

// quoted lists metric names as SQL string literals.
func quoted(names []string) string {
	return "'" + strings.Join(names, "', '") + "'"
}

// estimable lists the result metrics that can be estimated (pkg/results'
// table), for panels marking figures measured or estimated.
func estimable(scope string) []string {
	var out []string
	for _, m := range results.All() {
		if m.Estimable && m.In(scope) {
			out = append(out, m.Name)
		}
	}
	return out
}

// provenance labels a result row: estimated when the analyzer flagged it,
// measured when it is a figure that could have been estimated but was not,
// empty for figures that are never estimated.
func provenance(estimableNames []string) string {
	return fmt.Sprintf("if(estimated = 1, 'estimated', if(metric IN (%s), 'measured', '')) AS provenance", quoted(estimableNames))
}

var (
	varExperiment = Variable{Name: "experiment", Label: "Experiment",
		SQL: "SELECT experiment_id FROM experiments FINAL ORDER BY created_ms DESC, experiment_id"}
	varConfiguration = Variable{Name: "configuration", Label: "Configuration", Multi: true,
		SQL: "SELECT DISTINCT config_hash FROM run_phases FINAL WHERE experiment_id = " + experimentVar + " ORDER BY config_hash"}
	varRun = Variable{Name: "run", Label: "Run",
		SQL: "SELECT DISTINCT run_id FROM run_phases FINAL WHERE experiment_id = " + experimentVar + " AND " + configFilter + " ORDER BY run_id"}
)

func experimentOverview() Board {
	runs := "experiment_id = " + experimentVar
	return Board{UID: "greenflow-experiment", Title: "GreenFlow · Experiment overview",
		Description: "One experiment: its runs and states, energy per event per configuration with confidence intervals, throughput " +
			"against the offered load, the Pareto front, SLO verdicts and data-quality flags.",
		Vars: []Variable{varExperiment, varConfiguration, {Name: "factor", Label: "Factor",
			SQL: "SELECT DISTINCT factor FROM run_factors FINAL WHERE experiment_id = " + experimentVar + " ORDER BY factor"}},
		Panels: []Panel{
			{Kind: KindTable, Title: "Runs and states", Width: 24, Height: 8,
				Description: "Every run of the experiment with its state and the window it measured; a run's id opens it in Run detail, " +
					"its time range set to the run's phases.",
				Links: []FieldLink{{Column: "run_id", Title: "Run detail",
					URL: "/d/greenflow-run?var-experiment=${experiment}&var-configuration=${__data.fields.config_hash}&var-run=${__value.raw}" +
						"&from=${__data.fields.from_ms}&to=${__data.fields.to_ms}"}},
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "idx", "repetition", "config_hash", "state", "reason",
					"measure_start", "measure_end", "from_ms", "to_ms"},
					SQL: `SELECT run_id, idx, repetition, config_hash, state, reason,
       toDateTime(intDiv(measure_start_ms, 1000)) AS measure_start, toDateTime(intDiv(measure_end_ms, 1000)) AS measure_end,
       from_ms, to_ms
FROM runs FINAL
ANY LEFT JOIN (SELECT run_id, min(start_ms) AS from_ms, max(end_ms) AS to_ms FROM run_phases FINAL WHERE ` + runs + ` GROUP BY run_id) USING (run_id)
WHERE ` + runs + ` AND ` + configFilter + `
ORDER BY idx`}}},
			{Kind: KindTable, Title: "Energy per event by factor level", Units: microJoules("mean", "ci_low", "ci_high"), Width: 24, Height: 8,
				Description: "The system under test's energy per event (mean over repetitions, with its confidence interval) of each " +
					"configuration against the level of the chosen factor (run_factors), ordered by the level as a number.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"factor", "level", "config_hash", "n", "mean", "ci_low", "ci_high", "provenance"},
					SQL: `SELECT ${factor:singlequote} AS factor, level, config_hash, n, mean, ` + finite("ci_low") + `, ` + finite("ci_high") + `,
       if(estimated = 1, 'estimated', 'measured') AS provenance
FROM config_results FINAL
ANY INNER JOIN (
  SELECT config_hash, any(value) AS level, any(value_num) AS level_num FROM run_factors FINAL
  WHERE ` + runs + ` AND factor = ${factor:singlequote} GROUP BY config_hash) USING (config_hash)
WHERE ` + runs + ` AND ` + configFilter + ` AND metric = '` + results.SUTMicroJPerEvent + `'
ORDER BY level_num, level`}}},
			{Kind: KindTable, Title: "Energy per event per configuration", Units: microJoules("mean", "ci_low", "ci_high"), Width: 12, Height: 8,
				Description: "The system under test's energy per event (µJ) over each configuration's repetitions: mean, confidence interval, " +
					"coefficient of variation (flagged above the analyzer's threshold). Estimated when the energy came from the utilisation model.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"config_hash", "factors", "n", "mean", "ci_low", "ci_high", "ci_level", "cv", "cv_flag", "provenance"},
					SQL: `SELECT config_hash, factors, n, mean, ` + finite("ci_low") + `, ` + finite("ci_high") + `, ci_level, ` + finite("cv") + `, cv_flag,
       if(estimated = 1, 'estimated', 'measured') AS provenance
FROM config_results FINAL
WHERE ` + runs + ` AND ` + configFilter + ` AND metric = '` + results.SUTMicroJPerEvent + `'
ORDER BY config_hash`}}},
			{Kind: KindTable, Title: "Throughput against offered load", Width: 12, Height: 8,
				Description: "Per run: the offered load and the events per second the window delivered, and their ratio.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "config_hash", "offered_eps", "throughput_eps", "delivered_ratio"},
					SQL: `SELECT run_id, config_hash,
       maxIf(value, metric = '` + results.OfferedRateEPS + `') AS offered_eps,
       maxIf(value, metric = '` + results.ThroughputEPS + `') AS throughput_eps,
       maxIf(value, metric = '` + results.EventsDeliveredRatio + `') AS delivered_ratio
FROM results FINAL
ANY LEFT JOIN (SELECT run_id, any(config_hash) AS config_hash FROM run_phases FINAL WHERE ` + runs + ` GROUP BY run_id) USING (run_id)
WHERE ` + runs + ` AND scope = 'run' AND ` + newestResults(runs) + ` AND ` + configFilter + `
GROUP BY run_id, config_hash
ORDER BY run_id`}}},
			{Kind: KindTable, Title: "Pareto front: energy per event against throughput", Width: 12, Height: 8,
				Description: "Each configuration's mean throughput and energy per event of the system under test; pareto_optimal: no other " +
					"configuration has as much throughput for less energy per event (or more for as little).",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"config_hash", "factors", "throughput_eps", "uj_per_event", "pareto_optimal"},
					SQL: `SELECT config_hash, factors, throughput_eps, uj_per_event,
       NOT arrayExists((t, e) -> t >= throughput_eps AND e <= uj_per_event AND (t > throughput_eps OR e < uj_per_event), all_t, all_e) AS pareto_optimal
FROM (` + configMeans(runs) + `)
CROSS JOIN (SELECT groupArray(throughput_eps) AS all_t, groupArray(uj_per_event) AS all_e FROM (` + configMeans(runs) + `))
ORDER BY throughput_eps`}}},
			{Kind: KindTable, Title: "SLO verdicts", Width: 12, Height: 8,
				Description: "Theodolite's lag-trend SLO per run: the consumer lag's slope with its confidence interval against the threshold.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "lag_trend_slope", "slope_ci_low", "slope_ci_high", "threshold", "slo_ok"},
					SQL: `SELECT run_id,
       maxIf(value, metric = '` + results.LagTrendSlope + `') AS lag_trend_slope,
       maxIf(value, metric = '` + results.LagTrendSlopeCILow + `') AS slope_ci_low,
       maxIf(value, metric = '` + results.LagTrendSlopeCIHigh + `') AS slope_ci_high,
       maxIf(value, metric = '` + results.LagSLOThreshold + `') AS threshold,
       multiIf(countIf(metric = '` + results.LagSLOOK + `') = 0, 'not evaluated', maxIf(value, metric = '` + results.LagSLOOK + `') = 1, 'ok', 'failed') AS slo_ok
FROM results FINAL
WHERE ` + runs + ` AND scope = 'run' AND ` + newestResults(runs) + `
  AND run_id IN (SELECT run_id FROM run_phases FINAL WHERE ` + runs + ` AND ` + configFilter + `)
GROUP BY run_id
ORDER BY run_id`}}},
			{Kind: KindTable, Title: "Data-quality flags", Width: 12, Height: 8,
				Description: "Flags the analyzer raised per run: what was bridged, recovered or could not be checked (caveats on derived " +
					"figures are marked as such).",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "flag", "kind"},
					Empty: "an undisturbed run raises no flag",
					SQL: `SELECT run_id, substring(metric, ` + fmt.Sprint(len(results.FlagPrefix)+1) + `) AS flag,
       if(metric IN (` + quoted(caveatMetrics()) + `), 'caveat', 'data quality') AS kind
FROM results FINAL
WHERE ` + runs + ` AND scope = 'run' AND startsWith(metric, '` + results.FlagPrefix + `') AND value = 1 AND ` + newestResults(runs) + `
  AND run_id IN (SELECT run_id FROM run_phases FINAL WHERE ` + runs + ` AND ` + configFilter + `)
ORDER BY run_id, flag`}}},
		},
	}
}

// microJoules gives columns the unit µJ.
func microJoules(cols ...string) map[string]string {
	out := map[string]string{}
	for _, c := range cols {
		out[c] = "µJ"
	}
	return out
}

// finite is column col, or NULL (an empty cell) where it is not a finite
// number: a configuration of one repetition has no confidence interval or
// variation, which the analyzer stores as nan.
func finite(col string) string {
	return "if(isFinite(" + col + "), " + col + ", NULL) AS " + col
}

// configMeans is one row per selected configuration: its mean throughput
// and energy per event.
func configMeans(runs string) string {
	return `SELECT config_hash, any(factors) AS factors,
         maxIf(mean, metric = '` + results.ThroughputEPS + `') AS throughput_eps,
         maxIf(mean, metric = '` + results.SUTMicroJPerEvent + `') AS uj_per_event
  FROM config_results FINAL
  WHERE ` + runs + ` AND ` + configFilter + `
  GROUP BY config_hash`
}

// caveatMetrics are the result rows of flags that qualify a derived figure.
func caveatMetrics() []string {
	var out []string
	for _, f := range results.Flags() {
		if results.Caveat(f.Name) {
			out = append(out, results.FlagMetric(f.Name))
		}
	}
	return out
}

// runWindow keeps rows of column ts inside the selected run's phases.
func runWindow(col string) string {
	return fmt.Sprintf("%s >= (SELECT min(start_time) FROM run_phases FINAL WHERE run_id = %s) AND %s <= (SELECT max(end_time) FROM run_phases FINAL WHERE run_id = %s)",
		col, runVar, col, runVar)
}

// runPower is the mean power of each sample series of the selected run
// per time bucket: the series of the given scopes on its (selected) nodes,
// inside its phases and the time range. The mean of the samples' power_w
// (a counter's interval energy over its interval) rather than a sum of
// delta_j: a row stored twice (a rewritten batch, before merges collapse
// it) leaves a mean as it is but would count twice in a sum, and the mean
// needs no de-duplication. On the one-hour, 100-target benchmark run after
// the 300 M-row history it took 58 ms against 144 ms for the sum over
// samples FINAL (best of 5, load 5 on 2 cores). The run's energies
// themselves are the analyzer's (results), not these.
func runPower(scopes string) string {
	return `SELECT ` + bucket + ` AS time, node, scope, target_id, source, max(estimated) AS estimated, avg(power_w) AS mean_w
  FROM samples
  WHERE $__timeFilter(ts) AND ` + runWindow("ts") + `
    AND node IN (SELECT node FROM run_targets WHERE run_id = ` + runVar + `) AND $__conditionalAll(node IN (${node:singlequote}), $node)
    AND scope IN (` + scopes + `)
  GROUP BY time, node, scope, target_id, source`
}

// estimatedSuffix marks a series whose samples came from the model.
const estimatedSuffix = "if(estimated = 1, ' (estimated)', '')"

func runDetail() Board {
	roles := `SELECT node, target_id, any(role) AS role FROM run_targets FINAL WHERE run_id = ` + runVar + ` GROUP BY node, target_id`
	return Board{UID: "greenflow-run", Title: "GreenFlow · Run detail",
		Description: "One run: power over time per role and per target with its phases, energy per event, offered and delivered load, " +
			"consumer lag against the SLO. Figures from the utilisation model are marked estimated. Set the time range to the run " +
			"(the Experiment overview's runs table gives its window).",
		Vars: []Variable{varExperiment, varConfiguration, varRun,
			{Name: "node", Label: "Node", Multi: true, SQL: "SELECT DISTINCT node FROM run_targets WHERE run_id = " + runVar + " ORDER BY node"}},
		// The phases' own milliseconds (start_time and end_time are widened
		// to whole seconds for the time filter, so consecutive phases would
		// overlap); the measured window only where it is not the measuring
		// phase itself (the scheduler's runs measure exactly that phase).
		Annotations: []Annotation{{Name: "Phases", SQL: `SELECT start_ms AS time, end_ms AS timeEnd, phase AS text, 'phase' AS tags
FROM run_phases FINAL
WHERE run_id = ` + runVar + ` AND end_time >= $__fromTime AND start_time <= $__toTime
  AND NOT (phase = '` + store.PhaseWindow + `' AND (start_ms, end_ms) IN (
    SELECT start_ms, end_ms FROM run_phases FINAL WHERE run_id = ` + runVar + ` AND phase = '` + events.RunStateMeasuring + `'))
ORDER BY time, timeEnd`}},
		Panels: []Panel{
			{Kind: KindTimeSeries, Title: "Power per role", Unit: "watt", Width: 12, Height: 9,
				Description: "Mean power per interval of each role's processes (their samples' mean power, summed), by meter; " +
					"unattributed is the nodes' rest, other their processes that are none of the run's targets.",
				SQL: []PanelSQL{{Format: FormatTimeSeries, Columns: []string{"time", "series", "power_w"},
					SQL: `SELECT time,
       concat(if(scope = 'unattributed', 'unattributed', if(role = '', 'other', role)), ' · ', source, ` + estimatedSuffix + `) AS series,
       sum(mean_w) AS power_w
FROM (` + runPower("'process', 'pod', 'unattributed'") + `)
ANY LEFT JOIN (` + roles + `) USING (node, target_id)
GROUP BY time, series
ORDER BY time`}}},
			{Kind: KindTimeSeries, Title: "Power per target", Unit: "watt", Width: 12, Height: 9,
				Description: "Mean power per interval of each of the run's targets, with its role and meter.",
				SQL: []PanelSQL{{Format: FormatTimeSeries, Columns: []string{"time", "series", "power_w"},
					SQL: `SELECT time,
       concat(target_id, ' (', role, ') · ', source, ` + estimatedSuffix + `) AS series,
       sum(mean_w) AS power_w
FROM (` + runPower("'process', 'pod'") + `)
ANY INNER JOIN (` + roles + `) USING (node, target_id)
GROUP BY time, series
ORDER BY time`}}},
			{Kind: KindTable, Title: "Energy per event", Width: 12, Height: 8,
				Description: "The run's energy and energy-per-event figures; provenance says whether each was measured by a hardware " +
					"counter or estimated by the utilisation model.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"metric", "value", "unit", "provenance"},
					SQL: `SELECT metric, value, unit, ` + provenance(estimable(results.ScopeRun)) + `
FROM results FINAL
WHERE run_id = ` + runVar + ` AND scope = 'run' AND metric IN (` + quoted([]string{results.SUTMicroJPerEvent, results.NodeMicroJPerEvent,
						results.SUTDynamicMicroJPerEvent, results.EventsPerJoule, results.SUTEnergyJ, results.NodeEnergyJ, results.UnattributedEnergyJ, results.Events}) + `)
  AND ` + newestResults("run_id = "+runVar) + `
ORDER BY metric`}}},
			{Kind: KindTable, Title: "Energy per role", Width: 12, Height: 8,
				Description: "Each role's energy, mean power and share of the nodes' energy in the measured window, measured or estimated.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"role", "metric", "value", "unit", "provenance"},
					SQL: `SELECT subject AS role, metric, value, unit, ` + provenance(estimable(results.ScopeRole)) + `
FROM results FINAL
WHERE run_id = ` + runVar + ` AND scope = 'role' AND metric IN (` + quoted([]string{results.EnergyJ, results.MeanPowerW, results.ShareOfNodeEnergy}) + `)
  AND ` + newestResults("run_id = "+runVar) + `
ORDER BY role, metric`}}},
			{Kind: KindTimeSeries, Title: "Offered and delivered load", Unit: "reqps", Width: 12, Height: 9,
				Description: "Records per second: delivered to the input topic (its high-water marks, all partitions), acknowledged " +
					"to the load generators, and the offered rate.",
				SQL: []PanelSQL{
					{Format: FormatTimeSeries, Columns: []string{"time", "series", "records_per_s"},
						SQL: `SELECT time, name AS series, sum(v - pv) / $__interval_s AS records_per_s
FROM (` + loadPerBucket + `)
ANY INNER JOIN (SELECT name, labels, toDateTime(toUInt32(time) + $__interval_s) AS time, v AS pv FROM (` + loadPerBucket + `)) USING (name, labels, time)
GROUP BY time, series
ORDER BY time`},
					{Format: FormatTimeSeries, Columns: []string{"time", "offered_per_s"},
						// ORDER BY after UNION ALL would order only its last
						// SELECT: the union is a subquery, ordered as a whole.
						SQL: `SELECT time, offered_per_s FROM (
  SELECT start_time AS time, ` + runScalar(results.OfferedRateEPS) + ` AS offered_per_s
  FROM run_phases FINAL WHERE run_id = ` + runVar + ` AND phase = '` + store.PhaseWindow + `'
  UNION ALL
  SELECT end_time AS time, ` + runScalar(results.OfferedRateEPS) + ` AS offered_per_s
  FROM run_phases FINAL WHERE run_id = ` + runVar + ` AND phase = '` + store.PhaseWindow + `')
ORDER BY time`}}},
			{Kind: KindTimeSeries, Title: "Consumer lag and the lag-trend SLO", Unit: "short", Width: 12, Height: 9,
				Description: "The consumer lag summed over partitions, and the most lag the SLO allows: the lag at the fit's start " +
					"growing at the threshold slope (lag_slo_threshold msg/s) from there, from the first interval that starts at or " +
					"after the fit's start. Lag above that line for long fails the SLO.",
				SQL: []PanelSQL{
					{Format: FormatTimeSeries, Columns: []string{"time", "consumer_lag"},
						SQL: `SELECT time, sum(v) AS consumer_lag
FROM (
  SELECT labels, ` + bucket + ` AS time, avg(value) AS v
  FROM run_metrics
  WHERE run_id = ` + runVar + ` AND name = '` + seriesConsumerLag + `' AND $__timeFilter(ts)
  GROUP BY labels, time)
GROUP BY time
ORDER BY time`},
					{Format: FormatTimeSeries, Columns: []string{"time", "slo_bound"},
						SQL: `SELECT time, any(lag0) + any(threshold) * (toUInt32(time) - any(fit_start)) AS slo_bound
FROM (
  SELECT ` + bucket + ` AS time,
         ` + runScalar(results.LagSLOThreshold) + ` AS threshold,
         ` + fitStart + ` AS fit_start,
         (SELECT sum(v) FROM (SELECT labels, argMin(value, ts_ms) AS v FROM run_metrics
            WHERE run_id = ` + runVar + ` AND name = '` + seriesConsumerLag + `' AND ts_ms >= ` + fitStart + ` * 1000 GROUP BY labels)) AS lag0
  FROM run_metrics
  WHERE run_id = ` + runVar + ` AND name = '` + seriesConsumerLag + `' AND $__timeFilter(ts)
    AND intDiv(toUInt32(ts), $__interval_s) * $__interval_s >= ` + fitStart + `)
GROUP BY time
ORDER BY time`}}},
		},
	}
}

// loadPerBucket is each load series' largest (cumulative) value per time
// bucket; the panel subtracts the bucket before by joining the series to
// itself shifted by one bucket — runningDifference would be shorter, but
// current ClickHouse refuses it without a deprecation setting.
var loadPerBucket = `SELECT name, labels, ` + bucket + ` AS time, max(value) AS v
  FROM run_metrics
  WHERE run_id = ` + runVar + ` AND name IN ('` + seriesHighWatermark + `', '` + seriesRecordsSent + `') AND $__timeFilter(ts)
  GROUP BY name, labels, time`

// fitStart is where the selected run's lag-trend fit starts, in Unix
// seconds: its window's start plus lag_trend_fit_start_s.
var fitStart = "((SELECT intDiv(min(start_ms), 1000) FROM run_phases FINAL WHERE run_id = " + runVar + " AND phase = '" + store.PhaseWindow +
	"') + toInt64(" + runScalar(results.LagTrendFitStartS) + "))"

func nodesAndMeters() Board {
	nodes := "$__conditionalAll(node IN (${node:singlequote}), $node)"
	inRange := "run_id IN (SELECT run_id FROM run_phases FINAL WHERE phase = '" + store.PhaseWindow + "' AND end_time >= $__fromTime AND start_time <= $__toTime)"
	return Board{UID: "greenflow-nodes", Title: "GreenFlow · Nodes and meters",
		Description: "The nodes' meters over any time range: power per node and zone by source, how far two meters of a node disagree, " +
			"the collectors' health (samples, recorded gaps and drops) and their own overhead.",
		Vars: []Variable{{Name: "node", Label: "Node", Multi: true, TimeRange: true,
			SQL: "SELECT DISTINCT node FROM samples WHERE $__timeFilter(ts) ORDER BY node"}},
		Panels: []Panel{
			{Kind: KindTimeSeries, Title: "Power per node and zone by source", Unit: "watt", Width: 24, Height: 9,
				Description: "Mean power per interval of each node's total and its zones (package, DRAM, …), by meter. The " +
					"utilisation model's one zone is the whole node, the node total again, and is left out.",
				SQL: []PanelSQL{{Format: FormatTimeSeries, Columns: []string{"time", "series", "power_w"},
					SQL: `SELECT time,
       concat(node, if(zone = '', '', concat('/', zone)), ' · ', source, ` + estimatedSuffix + `) AS series,
       sum(mean_w) AS power_w
FROM (
  SELECT ` + bucket + ` AS time, node, scope, target_id, zone, source, max(estimated) AS estimated, avg(power_w) AS mean_w
  FROM samples
  WHERE $__timeFilter(ts) AND ` + nodes + ` AND scope IN ('node', 'zone') AND NOT (scope = 'zone' AND zone = '` + energy.ModelZone + `')
  GROUP BY time, node, scope, target_id, zone, source)
GROUP BY time, series
ORDER BY time`}}},
			{Kind: KindTimeSeries, Title: "Samples per second by node and meter", Unit: "short", Width: 12, Height: 8,
				Description: "How many node-total samples each meter stored per second: a drop is a collector or meter that stopped.",
				SQL: []PanelSQL{{Format: FormatTimeSeries, Columns: []string{"time", "series", "samples_per_s"},
					SQL: `SELECT ` + bucket + ` AS time, concat(node, ' · ', source) AS series, count() / $__interval_s AS samples_per_s
FROM samples
WHERE $__timeFilter(ts) AND ` + nodes + ` AND scope = 'node'
GROUP BY time, series
ORDER BY time`}}},
			{Kind: KindTable, Title: "Cross-meter residuals", Width: 12, Height: 8,
				Description: "Runs in the time range whose node was measured by two meters at once: another meter's energy minus the " +
					"primary's, in J and %.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "node", "meters", "residual_j", "residual_pct"},
					Empty: "a node with one meter has no residual (the dev stack's nodes have one)",
					SQL: `SELECT run_id, subject AS node,
       maxIf(value, metric = '` + results.QualityCrossMeters + `') AS meters,
       maxIf(value, metric = '` + results.QualityCrossMeterResidualJ + `') AS residual_j,
       maxIf(value, metric = '` + results.QualityCrossMeterResidualPct + `') AS residual_pct
FROM results FINAL
WHERE scope = 'node' AND ` + inRange + ` AND $__conditionalAll(subject IN (${node:singlequote}), $node)
GROUP BY run_id, node
HAVING meters >= 2
ORDER BY run_id, node`}}},
			{Kind: KindTable, Title: "Recorded gaps and drops", Width: 12, Height: 8,
				Description: "Stretches the collectors recorded as missing or not counted: dropped past the spool bound, a fresh " +
					"baseline, standby, an implausible counter.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"from", "to", "node", "source", "reason", "samples", "detail"},
					Empty: "an undisturbed collector records no gap",
					SQL: `SELECT toDateTime(intDiv(from_ms, 1000)) AS from, toDateTime(intDiv(to_ms, 1000)) AS to, node, source, reason, samples, detail
FROM gaps FINAL
WHERE ` + nodes + ` AND to_ms >= toUInt32($__fromTime) * 1000 AND from_ms <= toUInt32($__toTime) * 1000
ORDER BY from_ms`}}},
			{Kind: KindTable, Title: "Collector overhead", Width: 12, Height: 8,
				Description: "Per run in the time range: the CPU the energy collectors used in its window (seconds, and mean cores).",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "collector_cpu_seconds", "collector_cpu_cores"},
					SQL: `SELECT run_id,
       maxIf(value, metric = '` + results.CollectorCPUSeconds + `') AS collector_cpu_seconds,
       maxIf(value, metric = '` + results.CollectorCPUCores + `') AS collector_cpu_cores
FROM results FINAL
WHERE scope = 'run' AND ` + inRange + `
GROUP BY run_id
ORDER BY run_id`}}},
			{Kind: KindTable, Title: "Meters of the runs", Width: 12, Height: 8,
				Description: "Each run's effective meter per node: the interval asked and sampled, the meter, measured or estimated.",
				SQL: []PanelSQL{{Format: FormatTable, Columns: []string{"run_id", "node", "meter", "label", "interval_ms", "note"},
					SQL: `SELECT run_id, node, meter, label, interval_ms, note
FROM run_meters FINAL
WHERE ` + inRange + ` AND ` + nodes + `
ORDER BY run_id, node, ts_ms`}}},
		},
	}
}

func platformHealth() Board {
	ts := func(title, unit, desc string, q ...PromQuery) Panel {
		return Panel{Kind: KindTimeSeries, Title: title, Unit: unit, Description: desc, PromQL: q, Width: 12, Height: 8}
	}
	return Board{UID: "greenflow-platform", Title: "GreenFlow · Platform health",
		Description: "The services' own /metrics (Prometheus): messages through JetStream, dead letters and consumer errors, the " +
			"collectors' spool and drops, analysis durations.",
		Panels: []Panel{
			ts("Messages consumed by outcome", "ops", "Lifecycle messages handled per second by consumer and outcome (ack, nak, wait, dead_letter).",
				PromQuery{`sum by (consumer, outcome) (rate(greenflow_bus_messages_consumed_total[$__rate_interval]))`, "{{consumer}} {{outcome}}"}),
			ts("Messages published", "ops", "Messages the services published per second, by type.",
				PromQuery{`sum by (type) (rate(greenflow_bus_messages_published_total[$__rate_interval]))`, "{{type}}"}),
			ts("Dead letters", "short", "Messages moved to the dead-letter stream in the interval, by consumer: each is a message no retry could handle.",
				PromQuery{`sum by (consumer) (increase(greenflow_bus_messages_dead_lettered_total[$__rate_interval]))`, "{{consumer}}"}),
			ts("Active runs and run transitions", "short", "Runs the scheduler is driving, and its state transitions per second.",
				PromQuery{`sum(greenflow_scheduler_runs_active)`, "active runs"},
				PromQuery{`sum by (state) (rate(greenflow_scheduler_run_transitions_total[$__rate_interval]))`, "to {{state}}"}),
			ts("Collector spool and drops", "short", "Sample rows waiting for ClickHouse in each collector's spool, and rows dropped past its bound.",
				PromQuery{`sum by (instance) (greenflow_energy_collector_backlog_rows)`, "backlog {{instance}}"},
				PromQuery{`sum by (instance) (increase(greenflow_energy_collector_samples_dropped_total[$__rate_interval]))`, "dropped {{instance}}"}),
			ts("Samples written", "ops", "Sample rows the collectors wrote per second.",
				PromQuery{`sum by (instance) (rate(greenflow_energy_collector_samples_written_total[$__rate_interval]))`, "{{instance}}"}),
			ts("Analysis duration", "s", "How long the analyzer took per run (quantiles over the interval).",
				PromQuery{`histogram_quantile(0.5, sum by (le) (rate(greenflow_analyzer_analysis_seconds_bucket[$__rate_interval])))`, "p50"},
				PromQuery{`histogram_quantile(0.95, sum by (le) (rate(greenflow_analyzer_analysis_seconds_bucket[$__rate_interval])))`, "p95"}),
			ts("Load generator records", "ops", "Records the load generators sent per second.",
				PromQuery{`sum by (instance) (rate(greenflow_load_generator_records_sent_total[$__rate_interval]))`, "{{instance}}"}),
		},
	}
}
