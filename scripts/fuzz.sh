#!/usr/bin/env bash
# Runs every Go native fuzz target of the repository (func FuzzXxx in a
# _test.go file under pkg/ and services/) for the given time each, one after
# the other: `go test -fuzz` takes one target per run. New targets are found
# without editing this file. A failing input is written under the package's
# testdata/fuzz/<target>/ (check it in once fixed: it becomes a seed) and
# the script exits non-zero.
#
#   scripts/fuzz.sh 3s        # make fuzz-short (part of make test)
#   scripts/fuzz.sh 1m        # make fuzz (FUZZTIME=…)
set -euo pipefail
fuzztime="${1:?usage: fuzz.sh <fuzztime, e.g. 3s or 1m or 1000x>}"
GO="${GO:-go}"
cd "$(dirname "$0")/.."

mapfile -t targets < <(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(' pkg services |
  sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
start=$SECONDS
failed=()
for t in "${targets[@]}"; do
  dir="${t% *}"
  name="${t#* }"
  printf 'fuzz %-45s %-40s %s\n' "./$dir" "$name" "$fuzztime"
  log="${TMPDIR:-/tmp}/greenflow-fuzz.log"
  if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" >"$log" 2>&1; then
    # Go's fuzz engine can end a very short run with "context deadline
    # exceeded" while a worker is still busy (no input failed: none is
    # written to testdata/fuzz). That is the engine's clock, not a finding:
    # the target runs once more and only a second failure counts.
    if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
      echo "fuzz: $name: the engine's deadline passed with no failing input; running it again" >&2
      "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" >"$log" 2>&1 && continue
    fi
    cat "$log" >&2
    failed+=("./$dir $name")
  fi
done
echo "fuzz: ${#targets[@]} targets, $((SECONDS - start)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
  exit 1
fi
