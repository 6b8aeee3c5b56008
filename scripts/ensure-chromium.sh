#!/usr/bin/env bash
# Makes sure headless Chromium is available: the report test renders the HTML
# report in it and keeps the screenshot as a test artifact.
set -euo pipefail
exec "$(dirname "$0")/ensure-deb.sh" chromium "; the report
test renders the HTML report in it." chromium chromium-browser
