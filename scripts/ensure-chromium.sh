#!/usr/bin/env bash
# Makes sure headless Chromium is available: the report test renders the HTML
# report in it and keeps the screenshot as a test artifact.
set -euo pipefail
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing: installing Debian's package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
chromium is missing and this script cannot install it (not root, or no apt-get).
Install it yourself (Debian/Ubuntu: sudo apt-get install -y chromium); the report
test renders the HTML report in it.
MSG
exit 1
