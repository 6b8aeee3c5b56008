#!/usr/bin/env bash
# Makes sure a ClickHouse server binary is available for tests and the demo.
# GreenFlow starts it itself (bound to 127.0.0.1, own data dir) and stops it.
set -euo pipefail
if [[ -n "${GREENFLOW_TEST_CLICKHOUSE_DSN:-}" ]]; then
  exit 0 # an external server was given
fi
exec "$(dirname "$0")/ensure-deb.sh" clickhouse-server ", or point
the tests at a running server: export GREENFLOW_TEST_CLICKHOUSE_DSN=clickhouse://127.0.0.1:9000" \
  clickhouse-server /usr/sbin/clickhouse-server clickhouse /usr/bin/clickhouse
