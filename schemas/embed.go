// Package schemas embeds the project's schema files so binaries carry them:
// event JSON Schemas (events/) and versioned ClickHouse migrations
// (clickhouse/). The files themselves are the source of truth.
package schemas

import "embed"

// Events holds schemas/events/*.json.
//
//go:embed events/*.json
var Events embed.FS

// ClickHouse holds the ordered migrations schemas/clickhouse/NNNN_name.sql.
//
//go:embed clickhouse/*.sql
var ClickHouse embed.FS
