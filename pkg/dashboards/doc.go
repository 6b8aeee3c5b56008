// Package dashboards is GreenFlow's Grafana dashboards as code: built with
// the Grafana foundation SDK on the ClickHouse plugin (a query type of our
// own, Query) and on Prometheus, rendered as JSON into deploy/grafana
// (tools/dashboards; a test fails when the checked-in JSON differs), with
// Expand filling the plugin's macros and Grafana's template variables the
// way they do, so that tests run every panel's and variable's SQL on a real
// ClickHouse (services/greenflow/internal/e2e, TestDashboardQueries).
//
// Every query must run on ClickHouse 18.16 (the only one tests have) and
// on current releases: time buckets are
// toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s), never
// $__timeInterval/$__timeGroup (toStartOfInterval); joins are ANY LEFT
// JOIN … USING; no runningDifference or neighbor (current releases refuse
// them by default; Lint checks); rows are de-duplicated by their table's
// key (FINAL or a GROUP BY of it), as the store's readers do.
package dashboards
