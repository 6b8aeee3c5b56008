#!/usr/bin/env bash
# Makes sure a ClickHouse server binary is available for tests and the demo.
# GreenFlow starts it itself (bound to 127.0.0.1, own data dir) and stops it.
set -euo pipefail
if [[ -n "${GREENFLOW_TEST_CLICKHOUSE_DSN:-}" ]]; then
  exit 0 # an external server was given
fi
for b in clickhouse-server /usr/sbin/clickhouse-server clickhouse /usr/bin/clickhouse; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "clickhouse-server is missing: installing Debian's package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
clickhouse-server is missing and this script cannot install it (not root, or no apt-get).
Install it yourself (Debian/Ubuntu: sudo apt-get install -y clickhouse-server), or point
the tests at a running server: export GREENFLOW_TEST_CLICKHOUSE_DSN=clickhouse://127.0.0.1:9000
MSG
exit 1
