// Package report reads an experiment from the store and writes what the
// analysis commands show: per-run results and per-configuration summaries
// (tables, CSV, JSON), the export files a notebook loads (Export) and the
// self-contained HTML report (Report). It was the CLI's; it is a package so
// the web console's downloads are the very bytes `greenflow export` and
// `greenflow report` write for the same experiment. Its charts are
// pkg/svgplot's and pkg/runcharts', its statistics pkg/compare's.
package report
