#!/usr/bin/env bash
# dup-noimports.sh [DIR] [MOST]: run the workplace's `duplicates` over a copy
# of DIR's tracked (and untracked, unignored) files with every Go import
# block and single import line blanked, line numbers kept. `duplicates`
# passes over Python's import lines but counts the lines inside Go's
# `import ( … )` blocks, so without this most of its pairs on this tree are
# import blocks that merely match (issue #13's note).
set -euo pipefail
src=$(cd "${1:-.}" && pwd)
most=${2:-200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$src" && git ls-files -co --exclude-standard -z) | (cd "$src" && xargs -0 cp --parents -t "$tmp" 2>/dev/null) || true
find "$tmp" -name '*.go' -print0 | xargs -0 -r python3 -c '
import sys
for p in sys.argv[1:]:
    lines = open(p).read().split("\n")
    inblock = False
    for i, l in enumerate(lines):
        if l.startswith("import ("):
            inblock = True
            lines[i] = ""
        elif inblock:
            if l.strip() == ")":
                inblock = False
            lines[i] = ""
        elif l.startswith("import \""):
            lines[i] = ""
    open(p, "w").write("\n".join(lines))
'
cd "$tmp" && duplicates --seconds 300 --most "$most"
